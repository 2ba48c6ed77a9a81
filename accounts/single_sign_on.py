"""
Single sign-on with OpenID Connect (mozilla-django-oidc), and which passwords still count.

- The provider's endpoints come from its discovery document, fetched once per process on the
  first sign-in (or from OIDC__*_ENDPOINT when set).
- People are found by the provider's issuer and subject (`ExternalIdentity`), never by a
  user name or an e-mail address, so no one signs in as a local account (the bootstrap
  superuser) by choosing its name at the provider. They are created at their first sign-in.
- At each sign-in the groups claim (`OIDC__GROUPS_CLAIM`) is mapped through `OIDC__GROUP_MAP`
  to team memberships with a role, and to operator (staff) status. Memberships added by hand
  in the portal or the admin are left alone. Every change is in the audit log.
- `LocalPasswordBackend` is Django's password login, limited to superusers when
  `AUTH__LOCAL_PASSWORDS` is off.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlencode

import httpx
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.http import HttpResponse
from django.utils import timezone
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
    OIDCLogoutView,
)

from accounts.models import ExternalIdentity, Membership, Team
from audit.services import Actor, record
from audit.snapshots import snapshot
from infra.runtime import get_runtime

logger = logging.getLogger(__name__)

# The Django group operators from the identity provider join: the admin permissions they need.
OPERATORS_GROUP = "Operators"
OPERATOR_APPS = ("accounts", "usage", "audit")
DISCOVERY_KEYS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
    "OIDC_OP_END_SESSION_ENDPOINT": "end_session_endpoint",
}
STAFF = "staff"


class IdentityProviderUnavailable(ImproperlyConfigured):
    """The discovery document could not be read."""


@dataclass(frozen=True)
class GroupRule:
    group: str
    team: str  # empty for the operators' rule
    role: str  # "admin", "member" or "staff"


def parse_group_map(text: str) -> list[GroupRule]:
    """`group=team:role` and `group=staff`, comma-separated."""
    rules = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        group, sep, target = (piece.strip() for piece in entry.partition("="))
        if not sep or not group or not target:
            raise ImproperlyConfigured(f"OIDC__GROUP_MAP: {entry!r} is not group=team:role")
        if target == STAFF:
            rules.append(GroupRule(group, "", STAFF))
            continue
        team, sep, role = (piece.strip() for piece in target.rpartition(":"))
        if not sep or not team or role not in Membership.Role.values:
            raise ImproperlyConfigured(
                f"OIDC__GROUP_MAP: {entry!r} must map to team:admin, team:member or staff"
            )
        rules.append(GroupRule(group, team, role))
    return rules


class DiscoveryState:
    """The runtime's copy of the provider's discovery document, read on first use."""

    SETTINGS = ("OIDC_ISSUER", "OIDC_TIMEOUT")

    def __init__(self) -> None:
        self.document: dict | None = None


def discovery() -> dict:
    """The provider's discovery document (read once per runtime; again after a failure)."""
    state = get_runtime().part(DiscoveryState)
    if state.document is None:
        state.document = _read_discovery()
    return state.document


def _read_discovery() -> dict:
    url = f"{settings.OIDC_ISSUER}/.well-known/openid-configuration"
    try:
        response = httpx.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise IdentityProviderUnavailable(f"Cannot read {url}: {exc}") from None
    if document.get("issuer", "").rstrip("/") != settings.OIDC_ISSUER:
        raise IdentityProviderUnavailable(
            f"{url} names the issuer {document.get('issuer')!r}, not {settings.OIDC_ISSUER!r}"
        )
    return document


def oidc_setting(attr: str, *default):
    """mozilla-django-oidc's settings, with the endpoints filled in from discovery."""
    if attr in DISCOVERY_KEYS:
        configured = settings.OIDC_ENDPOINTS.get(attr, "")
        if configured:
            return configured
        found = discovery().get(DISCOVERY_KEYS[attr])
        if found:
            return found
        if default:
            return default[0]
        raise ImproperlyConfigured(f"The identity provider has no {DISCOVERY_KEYS[attr]}")
    return import_from_settings(attr, *default)


def provider_unavailable(exc: Exception) -> HttpResponse:
    logger.warning("Single sign-on failed: the identity provider is unavailable. %s", exc)
    return HttpResponse(
        "The identity provider cannot be reached; try again later.",
        status=HTTPStatus.SERVICE_UNAVAILABLE,
        content_type="text/plain; charset=utf-8",
    )


class SignInView(OIDCAuthenticationRequestView):
    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args, **kwargs) -> None:
        # The endpoints are looked up when a sign-in starts, not when the view is built, so an
        # unreachable provider is a 503 page rather than an error.
        View.__init__(self, *args, **kwargs)

    def get(self, request):
        try:
            self.OIDC_OP_AUTH_ENDPOINT = oidc_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
            self.OIDC_RP_CLIENT_ID = oidc_setting("OIDC_RP_CLIENT_ID")
        except ImproperlyConfigured as exc:
            return provider_unavailable(exc)
        return super().get(request)


class CallbackView(OIDCAuthenticationCallbackView):
    get_settings = staticmethod(oidc_setting)

    def get(self, request):
        try:
            return super().get(request)
        except requests.HTTPError as exc:
            # The provider refused the code (expired, replayed): the sign-in failed.
            logger.warning("Single sign-on failed: the provider refused the sign-in. %s", exc)
            return self.login_failure()
        except (ImproperlyConfigured, requests.RequestException) as exc:
            return provider_unavailable(exc)


class SignOutView(OIDCLogoutView):
    get_settings = staticmethod(oidc_setting)


def provider_logout_url(request) -> str:
    """
    The provider's end-session endpoint (RP-initiated logout) when it has one, so signing out
    of the portal signs out there too; else the portal's login page.
    """
    back = request.build_absolute_uri(settings.LOGOUT_REDIRECT_URL)
    id_token = request.session.get("oidc_id_token")
    if not settings.OIDC_ENABLED or not id_token:
        return settings.LOGOUT_REDIRECT_URL
    try:
        end_session = oidc_setting("OIDC_OP_END_SESSION_ENDPOINT", "")
    except ImproperlyConfigured:
        end_session = ""
    if not end_session:
        return settings.LOGOUT_REDIRECT_URL
    query = urlencode(
        {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": back,
            "client_id": settings.OIDC_RP_CLIENT_ID,
        }
    )
    return f"{end_session}?{query}"


def _username_from(claims: dict) -> str:
    wanted = claims.get("preferred_username") or (claims.get("email") or "").split("@")[0]
    wanted = re.sub(r"[^\w.@+-]", "", str(wanted))[:140] or "user"
    users = get_user_model().objects
    name, suffix = wanted, 1
    while users.filter(username=name).exists():
        suffix += 1
        name = f"{wanted}-{suffix}"
    return name


def groups_of(claims: dict) -> list[str]:
    value = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [str(group) for group in value][:1000]


# The backend's settings, read when first used: Django builds every backend for each signed-in
# request (to load the user), which must not wait on the provider.
LAZY_BACKEND_SETTINGS = {
    "OIDC_OP_TOKEN_ENDPOINT": (),
    "OIDC_OP_USER_ENDPOINT": (),
    "OIDC_OP_JWKS_ENDPOINT": (None,),
    "OIDC_RP_CLIENT_ID": (),
    "OIDC_RP_CLIENT_SECRET": (),
    "OIDC_RP_SIGN_ALGO": ("HS256",),
    "OIDC_RP_IDP_SIGN_KEY": (None,),
}


class IdentityProviderBackend(OIDCAuthenticationBackend):
    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args, **kwargs) -> None:
        self.UserModel = get_user_model()

    def __getattr__(self, name: str):
        if name in LAZY_BACKEND_SETTINGS:
            return oidc_setting(name, *LAZY_BACKEND_SETTINGS[name])
        raise AttributeError(name)

    def get_userinfo(self, access_token, id_token, payload):
        # Some providers (Entra ID) put the groups in the ID token only.
        return {**payload, **super().get_userinfo(access_token, id_token, payload)}

    def verify_claims(self, claims) -> bool:
        return bool(claims.get("sub"))

    def filter_users_by_claims(self, claims):
        return get_user_model().objects.filter(
            external_identity__issuer=settings.OIDC_ISSUER,
            external_identity__subject=str(claims.get("sub")),
        )

    def create_user(self, claims):
        with transaction.atomic():
            user = get_user_model().objects.create_user(
                username=_username_from(claims),
                email=claims.get("email") or "",
                first_name=str(claims.get("given_name") or "")[:150],
                last_name=str(claims.get("family_name") or "")[:150],
            )
            ExternalIdentity.objects.create(
                user=user, issuer=settings.OIDC_ISSUER, subject=str(claims["sub"])
            )
            actor = Actor(name=user.get_username(), user=user, ip=self._ip())
            record(actor=actor, action="user.create", target=user, after=user_snapshot(user))
            sync_groups(user, claims, actor=actor)
        return user

    def update_user(self, user, claims):
        with transaction.atomic():
            actor = Actor(name=user.get_username(), user=user, ip=self._ip())
            sync_groups(user, claims, actor=actor)
        return user

    def _ip(self) -> str | None:
        request = getattr(self, "request", None)
        return request.META.get("REMOTE_ADDR") if request is not None else None


def user_snapshot(user) -> dict:
    return {
        "username": user.get_username(),
        "email": user.email,
        "is_staff": user.is_staff,
        "is_active": user.is_active,
    }


def operators_group() -> Group:
    group, created = Group.objects.get_or_create(name=OPERATORS_GROUP)
    if created:
        group.permissions.set(Permission.objects.filter(content_type__app_label__in=OPERATOR_APPS))
    return group


def sync_groups(user, claims: dict, *, actor: Actor) -> None:
    """Bring the user's mapped memberships and staff status in line with the groups claim."""
    groups = set(groups_of(claims))
    rules = parse_group_map(settings.OIDC_GROUP_MAP)
    ExternalIdentity.objects.filter(user=user).update(
        groups=sorted(groups), last_login_at=timezone.now()
    )
    if user.is_superuser:
        return  # the bootstrap account is managed here, never by the provider
    wanted: dict[str, str] = {}
    for rule in rules:
        if rule.group in groups and rule.role != STAFF:
            # admin wins over member when two groups map to one team
            if wanted.get(rule.team) != Membership.Role.ADMIN:
                wanted[rule.team] = rule.role
    staff_rules = [rule for rule in rules if rule.role == STAFF]
    if staff_rules:
        should_be_staff = any(rule.group in groups for rule in staff_rules)
        if user.is_staff != should_be_staff:
            before = user_snapshot(user)
            user.is_staff = should_be_staff
            user.save(update_fields=["is_staff"])
            group = operators_group()
            if should_be_staff:
                user.groups.add(group)
            else:
                user.groups.remove(group)
            record(
                actor=actor,
                action="user.staff",
                target=user,
                before=before,
                after=user_snapshot(user),
            )
    mapped_teams = {rule.team for rule in rules if rule.team}
    current = {
        m.team.name: m
        for m in Membership.objects.select_related("team").filter(
            user=user, team__name__in=mapped_teams
        )
    }
    for team_name, role in wanted.items():
        membership = current.get(team_name)
        if membership is None:
            team, created = Team.objects.get_or_create(name=team_name)
            if created:
                record(
                    actor=actor,
                    action="team.create",
                    target=team,
                    team_name=team.name,
                    after=snapshot(team),
                )
            membership = Membership.objects.create(
                team=team, user=user, role=role, source=Membership.Source.IDENTITY_PROVIDER
            )
            record(
                actor=actor,
                action="membership.create",
                target=membership,
                team_name=team_name,
                after=snapshot(membership),
            )
        elif membership.source == Membership.Source.IDENTITY_PROVIDER and membership.role != role:
            before = snapshot(membership)
            membership.role = role
            membership.save(update_fields=["role"])
            record(
                actor=actor,
                action="membership.change",
                target=membership,
                team_name=team_name,
                before=before,
                after=snapshot(membership),
            )
    for team_name, membership in current.items():
        if team_name not in wanted and membership.source == Membership.Source.IDENTITY_PROVIDER:
            record(
                actor=actor,
                action="membership.delete",
                target=membership,
                team_name=team_name,
                before=snapshot(membership),
            )
            membership.delete()


class LocalPasswordBackend(ModelBackend):
    """Django's password login; only superusers' when AUTH__LOCAL_PASSWORDS is off."""

    def user_can_authenticate(self, user) -> bool:
        if not settings.AUTH_LOCAL_PASSWORDS and not user.is_superuser:
            return False
        return super().user_can_authenticate(user)
