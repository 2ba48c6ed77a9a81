"""
Single sign-on's rules without a browser: the group map, who is created and found, which
memberships and staff status follow the groups claim, and which passwords still work.
(The whole flow against a real provider: tests/integration/test_portal_browser.py.)
"""

from __future__ import annotations

import pytest
from django.contrib.auth import authenticate
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from accounts import single_sign_on
from accounts.models import ExternalIdentity, Membership, Team
from accounts.single_sign_on import (
    GroupRule,
    IdentityProviderBackend,
    parse_group_map,
    provider_logout_url,
    sync_groups,
)
from audit.models import AuditEvent
from audit.services import Actor

pytestmark = pytest.mark.django_db

ISSUER = "https://idp.example.com/realms/main"
GROUP_MAP = "ml-admins=ml:admin,ml-users=ml:member,ops=staff,research=research:member"


@pytest.fixture
def sso(settings):
    settings.OIDC_ISSUER = ISSUER
    settings.OIDC_ENABLED = True
    settings.OIDC_GROUP_MAP = GROUP_MAP
    settings.OIDC_GROUPS_CLAIM = "groups"
    settings.AUTHENTICATION_BACKENDS = [
        "accounts.single_sign_on.LocalPasswordBackend",
        "accounts.single_sign_on.IdentityProviderBackend",
    ]
    return settings


def backend() -> IdentityProviderBackend:
    instance = IdentityProviderBackend()
    instance.request = RequestFactory().get("/oidc/callback/", REMOTE_ADDR="192.0.2.9")
    return instance


def roles_of(user) -> dict[str, tuple[str, str]]:
    return {
        m.team.name: (m.role, m.source)
        for m in Membership.objects.select_related("team").filter(user=user)
    }


def test_group_map_is_parsed():
    assert parse_group_map(" a=t:admin , b=t:member,c=staff,") == [
        GroupRule("a", "t", "admin"),
        GroupRule("b", "t", "member"),
        GroupRule("c", "", "staff"),
    ]
    assert parse_group_map("") == []


@pytest.mark.parametrize("bad", ["nogroup", "a=", "a=t:owner", "a=t"])
def test_a_broken_group_map_says_which_entry(bad):
    with pytest.raises(ImproperlyConfigured, match="OIDC__GROUP_MAP"):
        parse_group_map(bad)


def test_first_sign_in_creates_the_user_with_teams_and_roles(sso):
    claims = {
        "sub": "f00d-1",
        "preferred_username": "ada",
        "email": "ada@example.com",
        "groups": ["ml-admins", "ml-users", "unrelated"],
    }
    user = backend().create_user(claims)
    assert user.username == "ada" and not user.has_usable_password()
    identity = ExternalIdentity.objects.get(user=user)
    assert (identity.issuer, identity.subject) == (ISSUER, "f00d-1")
    assert roles_of(user) == {"ml": ("admin", "identity_provider")}  # admin wins over member
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"user.create", "team.create", "membership.create"} <= actions
    assert AuditEvent.objects.get(action="user.create").ip == "192.0.2.9"


def test_later_sign_ins_follow_the_groups_and_leave_manual_memberships_alone(
    sso, django_user_model
):
    user = backend().create_user({"sub": "s1", "preferred_username": "max", "groups": ["ml-users"]})
    research = Team.objects.create(name="research")
    Membership.objects.create(team=research, user=user, role="admin")  # added by hand
    backend().update_user(user, {"sub": "s1", "groups": ["ml-admins"]})
    assert roles_of(user) == {"ml": ("admin", "identity_provider"), "research": ("admin", "manual")}
    backend().update_user(user, {"sub": "s1", "groups": []})
    assert roles_of(user) == {"research": ("admin", "manual")}
    deleted = AuditEvent.objects.get(action="membership.delete")
    assert deleted.before["team"] == "ml" and deleted.after is None


def test_staff_status_follows_the_operators_group(sso):
    user = backend().create_user({"sub": "s2", "preferred_username": "olga", "groups": ["ops"]})
    assert user.is_staff and user.groups.filter(name="Operators").exists()
    assert user.has_perm("accounts.change_team")
    backend().update_user(user, {"sub": "s2", "groups": []})
    user.refresh_from_db()
    assert not user.is_staff
    rows = AuditEvent.objects.filter(action="user.staff").order_by("id")
    assert [(r.before["is_staff"], r.after["is_staff"]) for r in rows] == [
        (False, True),
        (True, False),
    ]


def test_the_bootstrap_superuser_is_never_changed_by_groups(sso, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-12345678")
    sync_groups(root, {"groups": ["ml-admins"]}, actor=Actor(name="root"))
    assert roles_of(root) == {}


def test_people_are_found_by_issuer_and_subject_never_by_name_or_email(sso, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", "pw-12345678")
    claims = {"sub": "evil", "preferred_username": "root", "email": "root@example.com"}
    assert not backend().filter_users_by_claims(claims).exists()
    created = backend().create_user(claims)
    assert created.username == "root-2" and not created.is_superuser
    assert list(backend().filter_users_by_claims(claims)) == [created]
    other_issuer = {"sub": "evil"}
    sso.OIDC_ISSUER = "https://another.example.com"
    assert not backend().filter_users_by_claims(other_issuer).exists()


def test_groups_may_come_from_the_id_token(sso, monkeypatch):
    monkeypatch.setattr(
        single_sign_on.OIDCAuthenticationBackend,
        "get_userinfo",
        lambda self, access_token, id_token, payload: {"sub": "s3", "email": "e@example.com"},
    )
    claims = backend().get_userinfo("at", "it", {"sub": "s3", "groups": ["ml-users"]})
    assert claims["groups"] == ["ml-users"] and claims["email"] == "e@example.com"


def test_local_passwords_can_be_switched_off_for_all_but_superusers(sso, django_user_model):
    django_user_model.objects.create_user("max", password="pw-12345678")
    django_user_model.objects.create_superuser("root", "root@example.com", "pw-12345678")
    assert authenticate(username="max", password="pw-12345678") is not None
    sso.AUTH_LOCAL_PASSWORDS = False
    assert authenticate(username="max", password="pw-12345678") is None
    assert authenticate(username="root", password="pw-12345678") is not None


def test_local_password_sign_in_is_refused_in_the_portal_when_off(sso, client, django_user_model):
    django_user_model.objects.create_user("max", password="pw-12345678")
    sso.AUTH_LOCAL_PASSWORDS = False
    response = client.post("/portal/login", {"username": "max", "password": "pw-12345678"})
    assert response.status_code == 200  # the form again, with its error
    assert "_auth_user_id" not in client.session


def test_logout_goes_to_the_providers_end_session_endpoint(sso):
    sso.OIDC_ENDPOINTS = {"OIDC_OP_END_SESSION_ENDPOINT": f"{ISSUER}/logout"}
    sso.OIDC_RP_CLIENT_ID = "portal"
    request = RequestFactory().post("/portal/logout")
    request.session = {"oidc_id_token": "header.payload.signature"}
    url = provider_logout_url(request)
    assert url.startswith(f"{ISSUER}/logout?id_token_hint=header.payload.signature")
    assert "post_logout_redirect_uri=http%3A%2F%2Ftestserver%2Fportal%2Flogin" in url
    assert "client_id=portal" in url
    request.session = {}  # a password sign-in: no provider session to end
    assert provider_logout_url(request) == "/portal/login"


def test_an_unreachable_provider_is_a_503_page(sso, client, monkeypatch):
    sso.OIDC_ENDPOINTS = {}
    sso.OIDC_ISSUER = "http://127.0.0.1:9"  # nothing listens on the discard port
    sso.OIDC_TIMEOUT = 2.0
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 503
    assert b"identity provider cannot be reached" in response.content


def test_portal_logout_ends_the_session(client, django_user_model):
    user = django_user_model.objects.create_user("max", password="pw-12345678")
    client.force_login(user)
    assert client.get("/portal/").status_code == 200
    response = client.post("/portal/logout")
    assert response.status_code == 302 and response["Location"] == "/portal/login"
    assert client.get("/portal/").status_code == 302


def test_the_groups_claim_is_configurable(sso):
    sso.OIDC_GROUPS_CLAIM = "roles"
    user = backend().create_user(
        {"sub": "s4", "preferred_username": "rae", "groups": ["ml-users"], "roles": "ml-admins"}
    )
    assert roles_of(user) == {"ml": ("admin", "identity_provider")}


def test_a_code_the_provider_refuses_is_a_failed_sign_in(sso, client, monkeypatch):
    import requests
    from django.conf import settings

    asked = []

    def refuse(self, request, **kwargs):
        asked.append(kwargs["nonce"])
        raise requests.HTTPError("400 Client Error: invalid_grant")

    monkeypatch.setattr(IdentityProviderBackend, "authenticate", refuse)
    session = client.session
    session["oidc_states"] = {"st": {"nonce": "n", "code_verifier": None, "added_on": 0}}
    session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key
    response = client.get("/oidc/callback/", {"code": "c", "state": "st"})
    assert asked == ["n"]
    assert response.status_code == 302
    assert response["Location"] == "/portal/login?failed=1"
