"""
What people do to their own teams and keys (the portal): each action is checked against the
actor's role (`accounts.roles`), validated against the team's limits, and written to the audit
log with before and after. A key's secret is returned once and never recorded.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from accounts import roles
from accounts.models import ApiKey, Membership, Team
from accounts.services import AccountsError, CreatedKey, create_api_key
from audit.services import Actor, record
from audit.snapshots import snapshot

LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "concurrent_requests",
    "tokens_per_day",
    "tokens_per_month",
)


class InvalidInput(AccountsError):
    """A value the team's rules refuse; `field` names the form field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class KeyRequest:
    name: str
    allowed_models: list[str]
    expires_at: dt.datetime | None


def key_snapshot(api_key: ApiKey) -> dict:
    return snapshot(api_key)


def team_snapshot(team: Team) -> dict:
    return snapshot(team)


def membership_snapshot(membership: Membership) -> dict:
    return snapshot(membership)


def _record_key(actor: Actor, action: str, api_key: ApiKey, before, after) -> None:
    record(
        actor=actor,
        action=action,
        target=api_key,
        object_repr=f"{api_key.name} (llm_{api_key.prefix}_…)",
        team_name=api_key.team.name,
        before=before,
        after=after,
    )


def _check_key_request(team: Team, wanted: KeyRequest, *, now: dt.datetime) -> None:
    name = wanted.name.strip()
    if not name or len(name) > 100:
        raise InvalidInput("name", "Give the key a name of 1 to 100 characters.")
    if team.allowed_models:
        outside = sorted(set(wanted.allowed_models) - set(team.allowed_models))
        if outside:
            raise InvalidInput(
                "allowed_models",
                f"The team may not use {', '.join(outside)}; it may use "
                f"{', '.join(team.allowed_models)}.",
            )
    if wanted.expires_at is not None and wanted.expires_at <= now:
        raise InvalidInput("expires_at", "The expiry must be in the future.")
    if team.max_key_days is not None:
        latest = now + dt.timedelta(days=team.max_key_days)
        if wanted.expires_at is None or wanted.expires_at > latest:
            raise InvalidInput(
                "expires_at",
                f"Keys of this team expire within {team.max_key_days} days "
                f"(by {latest:%Y-%m-%d %H:%M} UTC).",
            )


def create_key(*, actor: Actor, user, team: Team, wanted: KeyRequest) -> CreatedKey:
    """A key in `team` owned by `user`: any member of the team may create one."""
    roles.require(roles.can_use_team(user, team), f"create keys in the team {team.name}")
    _check_key_request(team, wanted, now=timezone.now())
    with transaction.atomic():
        created = create_api_key(
            name=wanted.name.strip(),
            team=team,
            # A team restricted to some models restricts every key to them too.
            allowed_models=list(wanted.allowed_models) or list(team.allowed_models),
            expires_at=wanted.expires_at,
            created_by=user,
        )
        _record_key(actor, "key.create", created.api_key, None, key_snapshot(created.api_key))
    return created


def revoke_key(*, actor: Actor, user, api_key: ApiKey) -> ApiKey:
    roles.require(roles.can_manage_key(user, api_key), "revoke this key")
    with transaction.atomic():
        api_key = ApiKey.objects.select_for_update().select_related("team").get(pk=api_key.pk)
        if api_key.revoked:
            return api_key
        before = key_snapshot(api_key)
        api_key.revoked = True
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked", "revoked_at"])
        _record_key(actor, "key.revoke", api_key, before, key_snapshot(api_key))
    return api_key


def rotate_key(*, actor: Actor, user, api_key: ApiKey, overlap: dt.timedelta) -> CreatedKey:
    """
    A new key with the old one's name, models and limits; the old one keeps working for
    `overlap` (zero revokes it at once), so clients can switch over without an outage.
    """
    roles.require(roles.can_manage_key(user, api_key), "rotate this key")
    if overlap < dt.timedelta(0):
        raise InvalidInput("overlap_hours", "The overlap cannot be negative.")
    now = timezone.now()
    with transaction.atomic():
        old = ApiKey.objects.select_for_update().select_related("team").get(pk=api_key.pk)
        if not old.is_active:
            raise InvalidInput("key", "Only an active key can be rotated.")
        team = old.team
        expires_at = None
        if old.expires_at is not None:
            expires_at = now + (old.expires_at - old.created_at)
        if team.max_key_days is not None:
            latest = now + dt.timedelta(days=team.max_key_days)
            expires_at = latest if expires_at is None else min(expires_at, latest)
        created = create_api_key(
            name=old.name,
            team=team,
            allowed_models=list(old.allowed_models),
            expires_at=expires_at,
            created_by=old.created_by,
            **{field: getattr(old, field) for field in LIMIT_FIELDS},
        )
        created.api_key.replaces = old
        created.api_key.save(update_fields=["replaces"])
        before = key_snapshot(old)
        if overlap == dt.timedelta(0):
            old.revoked, old.revoked_at = True, now
        else:
            end = now + overlap
            old.expires_at = end if old.expires_at is None else min(old.expires_at, end)
        old.save(update_fields=["revoked", "revoked_at", "expires_at"])
        _record_key(actor, "key.rotate", old, before, key_snapshot(old))
        _record_key(actor, "key.create", created.api_key, None, key_snapshot(created.api_key))
    return created


def _checked_limits(team: Team, limits: dict[str, int | None]) -> dict[str, int | None]:
    checked = {}
    for field in LIMIT_FIELDS:
        value = limits.get(field)
        if value is not None and value < 0:
            raise InvalidInput(field, f"{field} cannot be negative.")
        ceiling = getattr(team, field)
        if value is not None and ceiling is not None and value > ceiling:
            raise InvalidInput(field, f"{field} may be at most the team's {ceiling}.")
        checked[field] = value
    return checked


def set_key_limits(*, actor: Actor, user, api_key: ApiKey, limits: dict[str, int | None]) -> None:
    """Per-key limits, within the team's: team admins and operators only."""
    roles.require(roles.can_manage_team(user, api_key.team), "change this key's limits")
    checked = _checked_limits(api_key.team, limits)
    with transaction.atomic():
        api_key = ApiKey.objects.select_for_update().select_related("team").get(pk=api_key.pk)
        before = key_snapshot(api_key)
        for field, value in checked.items():
            setattr(api_key, field, value)
        api_key.save(update_fields=list(LIMIT_FIELDS))
        _record_key(actor, "key.limits", api_key, before, key_snapshot(api_key))


def set_team_limits(
    *,
    actor: Actor,
    user,
    team: Team,
    limits: dict[str, int | None],
    allowed_models: list[str],
    max_key_days: int | None,
) -> None:
    """The team's own limits, models and key lifetime: operators only."""
    roles.require(roles.is_operator(user), "change the team's limits")
    for field in LIMIT_FIELDS:
        value = limits.get(field)
        if value is not None and value < 0:
            raise InvalidInput(field, f"{field} cannot be negative.")
    if max_key_days is not None and max_key_days < 1:
        raise InvalidInput("max_key_days", "A key lifetime is at least one day.")
    with transaction.atomic():
        team = Team.objects.select_for_update().get(pk=team.pk)
        before = team_snapshot(team)
        for field in LIMIT_FIELDS:
            setattr(team, field, limits.get(field))
        team.allowed_models = list(allowed_models)
        team.max_key_days = max_key_days
        team.save()
        record(
            actor=actor,
            action="team.limits",
            target=team,
            team_name=team.name,
            before=before,
            after=team_snapshot(team),
        )


def _record_membership(actor: Actor, action: str, membership: Membership, before, after) -> None:
    record(
        actor=actor,
        action=action,
        target=membership,
        team_name=membership.team.name,
        before=before,
        after=after,
    )


def add_member(*, actor: Actor, user, team: Team, username: str, role: str) -> Membership:
    roles.require(roles.can_manage_team(user, team), f"manage the members of {team.name}")
    if role not in Membership.Role.values:
        raise InvalidInput("role", f"role must be one of {', '.join(Membership.Role.values)}.")
    person = get_user_model().objects.filter(username=username.strip()).first()
    if person is None:
        raise InvalidInput(
            "username", "No account with that user name (people appear after their first sign-in)."
        )
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(
            team=team, user=person, defaults={"role": role}
        )
        if not created:
            raise InvalidInput("username", f"{username} is already in {team.name}.")
        _record_membership(
            actor, "membership.create", membership, None, membership_snapshot(membership)
        )
    return membership


def set_member_role(*, actor: Actor, user, membership: Membership, role: str) -> None:
    roles.require(roles.can_manage_team(user, membership.team), "change roles in this team")
    if role not in Membership.Role.values:
        raise InvalidInput("role", f"role must be one of {', '.join(Membership.Role.values)}.")
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        before = membership_snapshot(membership)
        membership.role = role
        membership.save(update_fields=["role"])
        _record_membership(
            actor, "membership.change", membership, before, membership_snapshot(membership)
        )


def remove_member(*, actor: Actor, user, membership: Membership) -> None:
    roles.require(roles.can_manage_team(user, membership.team), "remove members of this team")
    with transaction.atomic():
        before = membership_snapshot(membership)
        team_name = membership.team.name
        record(
            actor=actor,
            action="membership.delete",
            target=membership,
            team_name=team_name,
            before=before,
            after=None,
        )
        membership.delete()
