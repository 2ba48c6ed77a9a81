import re
from http import HTTPStatus

import pytest

from accounts.authentication import MISSING_KEY_DETAIL
from accounts.models import ApiKey

pytestmark = [pytest.mark.urls("tests.teams_urls"), pytest.mark.django_db]


def test_creating_a_key_in_the_admin_shows_it_once_and_stores_only_its_hash(
    admin_client, client, team
):
    response = admin_client.post(
        "/admin/accounts/apikey/add/",
        {"name": "from-admin", "team": team.pk, "allowed_models": "small, large"},
    )
    assert response.status_code == HTTPStatus.OK
    assert "no-store" in response["Cache-Control"]
    shown = re.search(r"llm_[a-z0-9]{8}_[A-Za-z0-9_-]+", response.content.decode())
    assert shown is not None
    # Nothing keeps it for a later page: no message cookie, nothing in the session.
    assert all(shown.group(0) not in cookie.value for cookie in response.cookies.values())
    assert shown.group(0) not in str(dict(admin_client.session))
    key = ApiKey.objects.get(name="from-admin")
    assert key.allowed_models == ["small", "large"]
    assert shown.group(0) not in key.secret_hash and key.prefix in shown.group(0)
    # The key works, and the list page never shows it again.
    assert client.get("/whoami", headers={"X-API-Key": shown.group(0)}).json()["kind"] == "key"
    listing = admin_client.get("/admin/accounts/apikey/").content.decode()
    assert shown.group(0) not in listing and f"llm_{key.prefix}_" in listing


def test_revoke_action_revokes(admin_client, make_key, client):
    created = make_key()
    assert client.get("/whoami", headers={"X-API-Key": created.full_key}).status_code == 200
    admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_selected", "_selected_action": [created.api_key.pk]},
    )
    assert ApiKey.objects.get(pk=created.api_key.pk).revoked
    assert client.get("/whoami", headers={"X-API-Key": created.full_key}).status_code == 403


def test_admin_pages_carry_a_same_origin_csp(admin_client):
    response = admin_client.get("/admin/")
    assert response.status_code == HTTPStatus.OK
    assert "default-src 'self'" in response["Content-Security-Policy"]


def test_staff_session_uses_the_api_without_a_key(admin_client):
    response = admin_client.get("/whoami")
    assert response.json() == {"kind": "staff", "name": "admin"}


def test_staff_session_needs_the_csrf_token_for_unsafe_methods(admin_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post("/whoami").status_code == HTTPStatus.FORBIDDEN


def test_a_non_staff_session_falls_back_to_the_key(client, django_user_model):
    user = django_user_model.objects.create_user("someone", password="pw-123456789")
    client.force_login(user)
    response = client.get("/whoami")
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.json() == {"detail": MISSING_KEY_DETAIL}


def test_team_weight_and_key_priority_are_set_in_the_admin(admin_client, team, make_key):
    def change_team(weight: str):
        return admin_client.post(
            f"/admin/accounts/team/{team.pk}/change/",
            {
                "name": team.name,
                "allowed_models": "",
                "weight": weight,
                "memberships-TOTAL_FORMS": "0",
                "memberships-INITIAL_FORMS": "0",
            },
        )

    response = change_team("3")
    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:2000]
    team.refresh_from_db()
    assert team.weight == 3.0
    created = make_key()
    page = admin_client.get(f"/admin/accounts/apikey/{created.api_key.pk}/change/")
    assert 'name="priority"' in page.content.decode()
    refused = change_team("0")
    assert refused.status_code == HTTPStatus.OK  # the form again, with the error
    team.refresh_from_db()
    assert team.weight == 3.0
