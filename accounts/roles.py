"""
Who may do what with teams and keys. Every portal action asks here, on the server.

- Operators (staff, and superusers) do everything, in every team.
- Team admins manage their team's members, all of its keys and their per-key limits (within
  the team's limits), and see the team's usage.
- Members create keys in their team and manage the keys they created, and nothing else.
- Team limits, allowed models and key lifetimes are the operators' alone.
"""

from __future__ import annotations

from accounts.models import ApiKey, Membership, Team


class Forbidden(Exception):
    """The signed-in account may not take this action."""


def is_operator(user) -> bool:
    return bool(user.is_active and (user.is_staff or user.is_superuser))


def role_in(user, team: Team) -> str | None:
    """The user's role in the team ("admin", "member"), or None."""
    if not user.is_authenticated:
        return None
    membership = Membership.objects.filter(team=team, user=user).only("role").first()
    return membership.role if membership else None


def can_use_team(user, team: Team) -> bool:
    return is_operator(user) or role_in(user, team) is not None


def can_manage_team(user, team: Team) -> bool:
    """Members, every key, per-key limits and the team's usage."""
    return is_operator(user) or role_in(user, team) == Membership.Role.ADMIN


def can_manage_key(user, api_key: ApiKey) -> bool:
    if can_manage_team(user, api_key.team):
        return True
    return role_in(user, api_key.team) is not None and api_key.created_by_id == user.pk


def require(allowed: bool, what: str) -> None:
    if not allowed:
        raise Forbidden(f"You may not {what}.")
