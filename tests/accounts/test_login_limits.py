"""
Login attempts are limited per account and per address on every page that takes a password
or a key: past the limit even the right password is refused (429) until the lock-out ends
or staff clear it.
"""

from __future__ import annotations

from http import HTTPStatus

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client, RequestFactory

from accounts.login_limits import client_ip

pytestmark = [pytest.mark.urls("tests.teams_urls"), pytest.mark.django_db]

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def limits(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.API_KEYS = ["browser-key-0123456789"]


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "operator", password=PASSWORD, is_staff=True, is_superuser=True
    )


def admin_login(username: str, password: str, address: str = "10.0.0.1"):
    return Client(REMOTE_ADDR=address).post(
        "/admin/login/", {"username": username, "password": password, "next": "/admin/"}
    )


def test_the_right_password_is_refused_after_too_many_wrong_ones(staff):
    for _ in range(2):
        assert admin_login("operator", "wrong").status_code == HTTPStatus.OK  # the form again
    assert admin_login("operator", "wrong").status_code == HTTPStatus.TOO_MANY_REQUESTS
    locked = admin_login("operator", PASSWORD, address="10.9.9.9")  # from anywhere
    assert locked.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert "Too many failed logins" in locked.content.decode()
    assert int(locked["Retry-After"]) == settings.LOGIN_LOCKOUT_MINUTES * 60
    assert settings.SESSION_COOKIE_NAME not in locked.cookies


def test_one_address_is_limited_across_accounts(staff, django_user_model):
    for name in ("alice", "bob", "carol"):
        admin_login(name, "guess")
    assert admin_login("operator", PASSWORD).status_code == HTTPStatus.TOO_MANY_REQUESTS
    # The account itself is not locked: from another address its owner still gets in.
    assert admin_login("operator", PASSWORD, address="10.0.0.2").status_code == HTTPStatus.FOUND


def test_staff_see_lockouts_in_the_admin_and_can_clear_them(staff, admin_client):
    for _ in range(3):
        admin_login("operator", "wrong")
    page = admin_client.get("/admin/axes/accessattempt/")
    assert page.status_code == HTTPStatus.OK
    assert "operator" in page.content.decode()
    AccessAttempt.objects.all().delete()  # what the admin's delete action does
    assert admin_login("operator", PASSWORD).status_code == HTTPStatus.FOUND


def key_login(key: str, address: str = "10.0.0.1"):
    return Client(REMOTE_ADDR=address).post("/api-auth/key", {"key": key})


def test_the_key_login_page_is_limited_per_key_prefix_and_per_address():
    for _ in range(2):
        assert key_login("llm_abcd1234_wrongsecret").status_code == HTTPStatus.FORBIDDEN
    assert key_login("llm_abcd1234_wrongsecret").status_code == HTTPStatus.FORBIDDEN
    assert key_login("llm_abcd1234_other", address="10.7.7.7").status_code == 429
    # The address is locked out too, for any key, even the right one.
    assert key_login("browser-key-0123456789").status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert key_login("browser-key-0123456789", address="10.0.0.3").status_code == 302


def test_the_client_address_is_the_connections_unless_a_proxy_header_is_trusted(settings):
    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.1", HTTP_X_REAL_IP="203.0.113.5", HTTP_X_FORWARDED_FOR="1.2.3.4"
    )
    assert client_ip(request) == "10.0.0.1"
    settings.LOGIN_CLIENT_IP_HEADER = "X-Real-IP"
    assert client_ip(request) == "203.0.113.5"
    settings.LOGIN_CLIENT_IP_HEADER = "X-Forwarded-For"
    assert client_ip(request) == "1.2.3.4"


@pytest.mark.urls("llmapi.urls")
def test_the_portals_password_login_is_limited_too(staff):
    def portal_login(password: str):
        return Client(REMOTE_ADDR="10.0.0.1").post(
            "/portal/login", {"username": "operator", "password": password}
        )

    for _ in range(2):
        assert portal_login("wrong").status_code == HTTPStatus.OK  # the form again
    assert portal_login("wrong").status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert portal_login(PASSWORD).status_code == HTTPStatus.TOO_MANY_REQUESTS
