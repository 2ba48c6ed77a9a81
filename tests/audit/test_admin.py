"""
The audit log in the admin: searchable, never editable or deletable; and every change made
in the admin to teams, memberships and keys leaves a row, without a key's secret.
"""

from __future__ import annotations

import re
from http import HTTPStatus

import pytest

from accounts.models import ApiKey, Membership, Team
from audit.models import AuditEvent
from tests.teams import key_pepper  # noqa: F401

pytestmark = pytest.mark.django_db


def test_changelist_searches_and_the_rows_are_read_only(admin_client):
    AuditEvent.objects.create(actor_name="ada", action="key.create", object_repr="laptop")
    AuditEvent.objects.create(actor_name="max", action="team.limits", object_repr="ml")
    found = admin_client.get("/admin/audit/auditevent/", {"q": "laptop"}).content.decode()
    assert 'field-actor_name">ada<' in found and 'field-actor_name">max<' not in found
    row = AuditEvent.objects.get(actor_name="ada")
    change_page = admin_client.get(f"/admin/audit/auditevent/{row.pk}/change/")
    assert change_page.status_code == HTTPStatus.OK
    assert b'name="_save"' not in change_page.content
    assert admin_client.get("/admin/audit/auditevent/add/").status_code == HTTPStatus.FORBIDDEN
    deleted = admin_client.post(f"/admin/audit/auditevent/{row.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == HTTPStatus.FORBIDDEN
    edited = admin_client.post(
        f"/admin/audit/auditevent/{row.pk}/change/", {"actor_name": "nobody"}
    )
    assert edited.status_code == HTTPStatus.FORBIDDEN
    assert AuditEvent.objects.get(pk=row.pk).actor_name == "ada"


def test_admin_changes_to_teams_and_memberships_are_audited(admin_client, django_user_model):
    max_user = django_user_model.objects.create_user("max")
    response = admin_client.post(
        "/admin/accounts/team/add/",
        {
            "name": "ml",
            "allowed_models": "",
            "requests_per_minute": "10",
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "0",
            "memberships-0-user": str(max_user.pk),
            "memberships-0-role": "admin",
        },
        REMOTE_ADDR="198.51.100.4",
    )
    assert response.status_code == HTTPStatus.FOUND, response.content[:2000]
    team = Team.objects.get(name="ml")
    membership = Membership.objects.get(team=team, user=max_user)
    created = AuditEvent.objects.get(action="team.create")
    assert created.after["requests_per_minute"] == 10
    assert (created.actor_name, created.ip) == ("admin", "198.51.100.4")
    assert AuditEvent.objects.get(action="membership.create").after["role"] == "admin"

    admin_client.post(
        f"/admin/accounts/team/{team.pk}/change/",
        {
            "name": "ml",
            "allowed_models": "",
            "requests_per_minute": "20",
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "1",
            "memberships-0-id": str(membership.pk),
            "memberships-0-team": str(team.pk),
            "memberships-0-user": str(max_user.pk),
            "memberships-0-role": "member",
        },
    )
    changed = AuditEvent.objects.get(action="team.change")
    assert (changed.before["requests_per_minute"], changed.after["requests_per_minute"]) == (10, 20)
    role = AuditEvent.objects.get(action="membership.change")
    assert (role.before["role"], role.after["role"]) == ("admin", "member")

    admin_client.post(f"/admin/accounts/team/{team.pk}/delete/", {"post": "yes"})
    assert AuditEvent.objects.get(action="team.delete").before["name"] == "ml"


def test_admin_key_changes_are_audited_without_the_secret(admin_client):
    team = Team.objects.create(name="ml")
    response = admin_client.post(
        "/admin/accounts/apikey/add/", {"name": "ci", "team": team.pk, "allowed_models": ""}
    )
    full_key = re.search(r"llm_[a-z0-9]{8}_[A-Za-z0-9_-]+", response.content.decode()).group(0)
    key = ApiKey.objects.get(name="ci")
    admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_selected", "_selected_action": [key.pk]},
    )
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["key.create", "key.revoke"]
    exported = str([row.as_json() for row in AuditEvent.objects.all()])
    assert full_key.split("_", 2)[2] not in exported
    assert key.secret_hash not in exported
    assert f"llm_{key.prefix}_" in exported
