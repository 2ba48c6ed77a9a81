"""
Every role against every portal action it must not take: a 403 naming what was refused,
nothing changed, and nothing in the audit log. And what each role may do, with its audit row.
"""

from __future__ import annotations

from http import HTTPStatus

import pytest

from accounts.models import ApiKey, Membership, Team
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def snapshot_state():
    return (
        list(ApiKey.objects.order_by("pk").values()),
        list(Membership.objects.order_by("pk").values()),
        list(Team.objects.order_by("pk").values()),
    )


def forbidden_actions(w):
    """(who, description, method, path, data) for each action that role must not take."""
    ml, other = w.ml.pk, w.other.pk
    colleague_key, other_key = w.colleague_key.pk, w.other_key.pk
    member_key = w.member_key.pk
    colleague_m, member_m = w.colleague_membership.pk, w.member_membership.pk
    limits = {"requests_per_minute": "5"}
    team_limits = {"requests_per_minute": "1000", "allowed_models": "", "max_key_days": ""}
    return [
        # A member: only their own keys.
        ("member", "revoke a colleague's key", "post", f"/portal/keys/{colleague_key}/revoke", {}),
        (
            "member",
            "rotate a colleague's key",
            "post",
            f"/portal/keys/{colleague_key}/rotate",
            {"overlap_hours": "1"},
        ),
        (
            "member",
            "set limits on their own key",
            "post",
            f"/portal/keys/{member_key}/limits",
            limits,
        ),
        ("member", "see a key's limits form", "get", f"/portal/keys/{member_key}/limits", None),
        (
            "member",
            "add a member",
            "post",
            f"/portal/teams/{ml}/members",
            {"username": "otto", "role": "member"},
        ),
        (
            "member",
            "promote themselves",
            "post",
            f"/portal/members/{member_m}/role",
            {"role": "admin"},
        ),
        ("member", "remove a colleague", "post", f"/portal/members/{colleague_m}/remove", {}),
        ("member", "see the team's usage", "get", f"/portal/teams/{ml}/usage", None),
        ("member", "change the team's limits", "post", f"/portal/teams/{ml}/limits", team_limits),
        (
            "member",
            "create a key in another team",
            "post",
            "/portal/keys/new",
            {"team": str(other), "name": "sneaky"},
        ),
        ("member", "see another team", "get", f"/portal/teams/{other}", None),
        # A team admin: their team, within its limits; never the team's own limits.
        (
            "team_admin",
            "change the team's limits",
            "post",
            f"/portal/teams/{ml}/limits",
            team_limits,
        ),
        ("team_admin", "see the team limits form", "get", f"/portal/teams/{ml}/limits", None),
        ("team_admin", "revoke another team's key", "post", f"/portal/keys/{other_key}/revoke", {}),
        (
            "team_admin",
            "set limits on another team's key",
            "post",
            f"/portal/keys/{other_key}/limits",
            limits,
        ),
        (
            "team_admin",
            "add members to another team",
            "post",
            f"/portal/teams/{other}/members",
            {"username": "max", "role": "admin"},
        ),
        ("team_admin", "see another team's usage", "get", f"/portal/teams/{other}/usage", None),
        # Someone in no team of these keys.
        (
            "outsider",
            "create a key in a team they are not in",
            "post",
            "/portal/keys/new",
            {"team": str(ml), "name": "sneaky"},
        ),
        (
            "outsider",
            "revoke a key of another team",
            "post",
            f"/portal/keys/{colleague_key}/revoke",
            {},
        ),
        (
            "outsider",
            "remove a member of another team",
            "post",
            f"/portal/members/{member_m}/remove",
            {},
        ),
    ]


FORBIDDEN_COUNT = 20


@pytest.mark.parametrize("index", range(FORBIDDEN_COUNT))
def test_each_role_is_refused_what_it_must_not_do(world, as_user, index):
    actions = forbidden_actions(world)
    assert len(actions) == FORBIDDEN_COUNT
    who, what, method, path, data = actions[index]
    client = as_user(getattr(world, who))
    before, audited = snapshot_state(), AuditEvent.objects.count()
    response = getattr(client, method)(path, data) if data is not None else client.get(path)
    assert response.status_code == HTTPStatus.FORBIDDEN, (who, what, response.status_code)
    assert b"You may not" in response.content
    assert snapshot_state() == before
    assert AuditEvent.objects.count() == audited


@pytest.mark.parametrize(
    "path",
    [
        "/portal/",
        "/portal/usage",
        "/portal/teams/1",
        "/portal/teams/1/usage",
        "/portal/keys/1/limits",
    ],
)
def test_anonymous_visitors_are_sent_to_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"].startswith("/portal/login?next=")


def test_anonymous_posts_change_nothing(world, client):
    before = snapshot_state()
    response = client.post(f"/portal/keys/{world.member_key.pk}/revoke")
    assert response.status_code in (HTTPStatus.FOUND, HTTPStatus.FORBIDDEN)
    assert snapshot_state() == before


def test_team_admin_cannot_set_key_limits_above_the_teams(world, as_user):
    client = as_user(world.team_admin)
    response = client.post(
        f"/portal/keys/{world.member_key.pk}/limits", {"requests_per_minute": "101"}
    )
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert b"at most the team&#x27;s 100" in response.content
    world.member_key.refresh_from_db()
    assert world.member_key.requests_per_minute is None
    assert not AuditEvent.objects.filter(action="key.limits").exists()


def test_member_creates_their_own_key_shown_once_and_audited(world, as_user):
    client = as_user(world.member)
    response = client.post(
        "/portal/keys/new",
        {"team": world.ml.pk, "name": "notebook", "expires_in_days": "30"},
        REMOTE_ADDR="203.0.113.7",
    )
    assert response.status_code == HTTPStatus.OK
    assert "no-store" in response["Cache-Control"]
    key = ApiKey.objects.get(name="notebook")
    assert key.created_by == world.member
    full_key = response.context["full_key"]
    assert full_key.startswith(f"llm_{key.prefix}_")
    row = AuditEvent.objects.get(action="key.create", object_id=str(key.pk))
    assert (row.actor_name, row.ip, row.team_name) == ("max", "203.0.113.7", "ml")
    assert row.before is None and row.after["name"] == "notebook"
    assert "secret_hash" not in row.after
    secret = full_key.split("_", 2)[2]
    assert all(secret not in str(r.as_json()) for r in AuditEvent.objects.all())
    assert all(key.secret_hash not in str(r.as_json()) for r in AuditEvent.objects.all())
    # The home page lists it by prefix, never in full.
    home = client.get("/portal/").content.decode()
    assert f"llm_{key.prefix}_" in home and full_key not in home


def test_member_revokes_and_rotates_their_own_key(world, as_user):
    client = as_user(world.member)
    rotated = client.post(f"/portal/keys/{world.member_key.pk}/rotate", {"overlap_hours": "2"})
    assert rotated.status_code == HTTPStatus.OK
    new_key = ApiKey.objects.get(replaces=world.member_key)
    old = ApiKey.objects.get(pk=world.member_key.pk)
    assert old.is_active and old.expires_at is not None  # still working, for the overlap
    assert (old.expires_at - new_key.created_at).total_seconds() == pytest.approx(7200, abs=60)
    assert new_key.created_by == world.member and new_key.is_active
    rotate_row = AuditEvent.objects.get(action="key.rotate")
    assert rotate_row.before["expires_at"] is None and rotate_row.after["expires_at"]
    revoked = client.post(f"/portal/keys/{new_key.pk}/revoke")
    assert revoked.status_code == HTTPStatus.FOUND
    assert ApiKey.objects.get(pk=new_key.pk).revoked
    row = AuditEvent.objects.get(action="key.revoke")
    assert row.before["revoked"] is False and row.after["revoked"] is True


def test_rotation_without_overlap_revokes_the_old_key_at_once(world, as_user):
    client = as_user(world.member)
    client.post(f"/portal/keys/{world.member_key.pk}/rotate", {"overlap_hours": "0"})
    assert ApiKey.objects.get(pk=world.member_key.pk).revoked


def test_rotation_overlap_is_bounded(world, as_user, settings):
    settings.PORTAL_ROTATION_MAX_OVERLAP_HOURS = 24
    client = as_user(world.member)
    response = client.post(f"/portal/keys/{world.member_key.pk}/rotate", {"overlap_hours": "25"})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert b"Overlap hours" in response.content
    assert not ApiKey.objects.filter(replaces=world.member_key).exists()


def test_team_admin_manages_members_and_key_limits(world, as_user):
    client = as_user(world.team_admin)
    added = client.post(
        f"/portal/teams/{world.ml.pk}/members", {"username": "otto", "role": "member"}
    )
    assert added.status_code == HTTPStatus.FOUND
    otto = Membership.objects.get(team=world.ml, user=world.outsider)
    client.post(f"/portal/members/{otto.pk}/role", {"role": "admin"})
    client.post(f"/portal/members/{world.colleague_membership.pk}/remove")
    limited = client.post(
        f"/portal/keys/{world.colleague_key.pk}/limits", {"requests_per_minute": "50"}
    )
    assert limited.status_code == HTTPStatus.FOUND
    assert ApiKey.objects.get(pk=world.colleague_key.pk).requests_per_minute == 50
    rows = {row.action: row for row in AuditEvent.objects.all()}
    assert rows["membership.create"].after["role"] == "member"
    assert (rows["membership.change"].before["role"], rows["membership.change"].after["role"]) == (
        "member",
        "admin",
    )
    assert rows["membership.delete"].after is None
    assert rows["membership.delete"].before["user"] == "cleo"
    assert rows["key.limits"].before["requests_per_minute"] is None
    assert rows["key.limits"].after["requests_per_minute"] == 50
    assert {row.actor_name for row in rows.values()} == {"ada"}
    # and sees the team's keys and usage
    assert client.get(f"/portal/teams/{world.ml.pk}/usage").status_code == HTTPStatus.OK
    team_page = client.get(f"/portal/teams/{world.ml.pk}").content.decode()
    assert "max-laptop" in team_page and "cleo-laptop" in team_page


def test_member_sees_only_their_own_keys_on_the_team_page(world, as_user):
    page = as_user(world.member).get(f"/portal/teams/{world.ml.pk}").content.decode()
    assert "max-laptop" in page and "cleo-laptop" not in page
    assert 'table class="members"' not in page


def test_operator_changes_team_limits_models_and_lifetime(world, as_user):
    client = as_user(world.operator)
    response = client.post(
        f"/portal/teams/{world.ml.pk}/limits",
        {"requests_per_minute": "500", "allowed_models": "small, large", "max_key_days": "90"},
    )
    assert response.status_code == HTTPStatus.FOUND
    world.ml.refresh_from_db()
    assert (world.ml.requests_per_minute, world.ml.allowed_models, world.ml.max_key_days) == (
        500,
        ["small", "large"],
        90,
    )
    row = AuditEvent.objects.get(action="team.limits")
    assert row.before["requests_per_minute"] == 100 and row.after["requests_per_minute"] == 500
    assert row.actor_name == "olga"


def test_keys_stay_within_the_teams_models_and_lifetime(world, as_user):
    world.ml.allowed_models = ["small"]
    world.ml.max_key_days = 30
    world.ml.save()
    client = as_user(world.member)
    too_long = client.post(
        "/portal/keys/new", {"team": world.ml.pk, "name": "k", "expires_in_days": "31"}
    )
    assert too_long.status_code == HTTPStatus.BAD_REQUEST
    assert b"within 30 days" in too_long.content
    never = client.post("/portal/keys/new", {"team": world.ml.pk, "name": "k"})
    assert never.status_code == HTTPStatus.BAD_REQUEST
    other_model = client.post(
        "/portal/keys/new",
        {"team": world.ml.pk, "name": "k", "expires_in_days": "7", "allowed_models": "large"},
    )
    assert other_model.status_code == HTTPStatus.BAD_REQUEST
    assert b"allowed_models" in other_model.content or b"large" in other_model.content
    assert not ApiKey.objects.filter(name="k").exists()
    ok = client.post("/portal/keys/new", {"team": world.ml.pk, "name": "k", "expires_in_days": "7"})
    assert ok.status_code == HTTPStatus.OK
    assert ApiKey.objects.get(name="k").allowed_models == ["small"]


def test_portal_pages_carry_the_same_origin_csp(world, as_user):
    response = as_user(world.member).get("/portal/")
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "<script" not in response.content.decode()


def test_forms_need_the_csrf_token(world):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(world.member)
    response = client.post(f"/portal/keys/{world.member_key.pk}/revoke")
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert not ApiKey.objects.get(pk=world.member_key.pk).revoked


@pytest.mark.parametrize("who", ["member", "team_admin"])
def test_only_operators_reach_the_admin_for_teams_limits_and_models(world, as_user, who):
    client = as_user(getattr(world, who))
    before = snapshot_state()
    listing = client.get("/admin/accounts/team/")
    assert listing.status_code == HTTPStatus.FOUND
    assert listing["Location"].startswith("/admin/login/")
    change = client.post(
        f"/admin/accounts/team/{world.ml.pk}/change/",
        {"name": "ml", "requests_per_minute": "100000"},
    )
    assert change.status_code == HTTPStatus.FOUND
    assert snapshot_state() == before


def test_forms_may_lead_to_the_identity_provider_only(settings):
    from portal.views import portal_csp

    settings.OIDC_ENABLED = False
    assert "form-action 'self';" in portal_csp() + ";"
    settings.OIDC_ENABLED = True
    settings.OIDC_ISSUER = "https://sso.example.com/realms/main"
    assert "form-action 'self' https://sso.example.com" in portal_csp()
