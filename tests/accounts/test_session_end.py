"""
Sessions end: a session cookie copied before logging out (or before its key is revoked, its
user removed or its password changed) opens nothing afterwards. Sessions are kept on the
server, so ending one there ends it for every copy of the cookie, on every worker.
"""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.conf import settings
from django.test import AsyncClient, Client

from accounts.key_sessions import MISSING_KEY_DETAIL

pytestmark = [pytest.mark.urls("tests.teams_urls"), pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
async def close_the_sync_threads_connections():
    """
    Views and `sync_to_async` calls use the database from Django's sync thread; its
    connections are closed after each test, or PostgreSQL refuses to drop the test database.
    """
    yield
    from asgiref.sync import sync_to_async

    from infra.database import close_connections

    await sync_to_async(close_connections)()


@pytest.fixture(autouse=True)
def keys(settings):
    settings.API_KEYS = ["browser-key-0123456789"]


@pytest.fixture(params=["database", "redis"])
def session_store(request, settings):
    """Sessions in the database (no REDIS_URL) or in a real Redis (with it)."""
    if request.param == "database":
        yield request.param
        return
    from tests.redis_server import REDIS_SERVER, RedisServer

    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (scripts/test installs Debian's redis-server)")
    server = RedisServer()
    server.start()
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": server.url,
            "KEY_PREFIX": "llmapi-test:cache",
        }
    }
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    try:
        yield request.param
    finally:
        server.stop()


async def test_a_key_session_cookie_replayed_after_logout_is_refused(session_store):
    browser = AsyncClient()
    login = await browser.post("/api-auth/key", {"key": "browser-key-0123456789"})
    assert login.status_code == HTTPStatus.FOUND
    copied = browser.cookies[settings.SESSION_COOKIE_NAME].value
    assert (await browser.get("/whoami")).json()["kind"] == "bootstrap"

    assert (await browser.post("/api-auth/logout")).status_code == HTTPStatus.FOUND

    attacker = AsyncClient()
    attacker.cookies[settings.SESSION_COOKIE_NAME] = copied
    replayed = await attacker.get("/whoami")
    assert replayed.status_code == HTTPStatus.UNAUTHORIZED
    assert replayed.json() == {"detail": MISSING_KEY_DETAIL}


async def test_a_database_key_session_ends_when_the_key_is_revoked(make_key):
    from asgiref.sync import sync_to_async

    from accounts import selectors, services

    created = await sync_to_async(make_key)(name="browser")
    browser = AsyncClient()
    await browser.post("/api-auth/key", {"key": created.full_key})
    assert (await browser.get("/whoami")).json() == {"kind": "key", "name": "browser"}
    await sync_to_async(services.revoke_api_key)(prefix=created.api_key.prefix)
    selectors.forget_all()  # what the revocation broadcast does on every worker
    assert (await browser.get("/whoami")).status_code == HTTPStatus.UNAUTHORIZED


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "operator", password=PASSWORD, is_staff=True, is_superuser=True
    )


def admin_login(client: Client) -> str:
    response = client.post(
        "/admin/login/", {"username": "operator", "password": PASSWORD, "next": "/admin/"}
    )
    assert response.status_code == HTTPStatus.FOUND, response.content[:500]
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def replay(cookie: str, path: str = "/admin/accounts/apikey/"):
    attacker = Client()
    attacker.cookies[settings.SESSION_COOKIE_NAME] = cookie
    return attacker.get(path)


def test_an_admin_cookie_replayed_after_logout_opens_nothing(staff, session_store):
    browser = Client()
    copied = admin_login(browser)
    assert replay(copied).status_code == HTTPStatus.OK
    assert replay(copied, "/whoami").json() == {"kind": "staff", "name": "operator"}

    # The admin's logout (to the login page, or its own "Logged out" page).
    assert browser.post("/admin/logout/").status_code in (HTTPStatus.OK, HTTPStatus.FOUND)

    page = replay(copied)
    assert page.status_code == HTTPStatus.FOUND
    assert page["Location"].startswith("/admin/login/")
    assert replay(copied, "/whoami").status_code == HTTPStatus.UNAUTHORIZED


def test_changing_the_password_ends_the_users_sessions(staff):
    copied = admin_login(Client())
    staff.set_password("another long passphrase")
    staff.save()
    assert replay(copied).status_code == HTTPStatus.FOUND
    assert replay(copied, "/whoami").status_code == HTTPStatus.UNAUTHORIZED


def test_removing_the_user_ends_their_sessions(staff):
    copied = admin_login(Client())
    staff.delete()
    assert replay(copied).status_code == HTTPStatus.FOUND
    assert replay(copied, "/whoami").status_code == HTTPStatus.UNAUTHORIZED


def test_sessions_live_in_redis_with_redis_url_and_in_the_database_without():
    from tests.settings_probe import settings_value

    assert settings_value("SESSION_ENGINE") == "django.contrib.sessions.backends.db"
    assert (
        settings_value("SESSION_ENGINE", REDIS_URL="redis://127.0.0.1:1/0")
        == "django.contrib.sessions.backends.cache"
    )
    assert settings_value("CACHES", REDIS_URL="redis://127.0.0.1:1/0")["default"]["BACKEND"] == (
        "django.core.cache.backends.redis.RedisCache"
    )
