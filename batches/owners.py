"""
Whose a file or a batch is, as a string kept on its row, and the caller a batch's lines run as.

A database key is `key:<id>`, the operator's API_KEY number i is `env:<i>`, an admin's
session is `staff:<user id>`. A batch's lines run as its owner with the key's limits as they
are when the line runs, minus the per-minute request rate and the concurrent requests (those
are for interactive traffic; the batch runner keeps its own concurrency): a key's token
budgets still hold.
"""

from __future__ import annotations

from dataclasses import replace

from django.conf import settings

from accounts.principals import Principal, bootstrap_principal, staff_principal
from limits.quotas import Limits, QuotaSubject


def owner_of(principal: Principal) -> str:
    if principal.kind == "key":
        return f"key:{principal.key_id}"
    if principal.kind == "bootstrap":
        return f"env:{principal.quota.key_id.removeprefix('env')}"
    return f"staff:{principal.quota.key_id.removeprefix('staff')}"


def load_owner_principal(owner: str) -> Principal | None:
    """
    The caller a batch of `owner` runs as (blocking: reads the database), or None when it may
    no longer call (its key revoked, expired or deleted; an API_KEY removed).
    """
    kind, _, ident = owner.partition(":")
    if not ident.isdigit():
        return None
    if kind == "key":
        from accounts.selectors import active_principal_for_key_id

        principal = active_principal_for_key_id(int(ident))
    elif kind == "env":
        principal = bootstrap_principal(int(ident)) if int(ident) < len(settings.API_KEYS) else None
    elif kind == "staff":
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(pk=int(ident), is_active=True).first()
        principal = staff_principal(user) if user is not None and user.is_staff else None
    else:
        principal = None
    return None if principal is None else batch_principal(principal)


def _without_rates(limits: Limits) -> Limits:
    return replace(limits, requests_per_minute=None, concurrent_requests=None)


def batch_principal(principal: Principal) -> Principal:
    """The same caller, counted against its token limits only (see the module docstring)."""
    quota = principal.quota
    subject = QuotaSubject(
        key_id=quota.key_id,
        key_limits=_without_rates(quota.key_limits),
        team_id=quota.team_id,
        team_limits=_without_rates(quota.team_limits),
    )
    return replace(principal, quota=subject)
