"""What a caller sees of its own key: limits, remaining quota and usage (GET /v1/me)."""

from __future__ import annotations

import datetime as dt

from accounts.principals import Principal
from infra.database import in_database_thread
from limits.stores import get_quota_store
from usage.selectors import key_totals


async def usage_summary(principal: Principal, *, now: dt.datetime | None = None) -> dict:
    """
    The key's name, team, allowed models and expiry; per holder (the key, its team) each
    limit with what is used and what remains in the current window; and the key's requests
    and tokens today and this month from the ledger (rows still queued are not in it yet).
    """
    now = now or dt.datetime.now(dt.UTC)
    quotas = await get_quota_store().snapshot(principal.quota, now=now.timestamp())
    usage = None
    if principal.kind == "key":
        usage = await _ledger_usage_in_thread(principal.prefix, now)
    return {
        "key": {
            "kind": principal.kind,
            "name": principal.name,
            "prefix": f"llm_{principal.prefix}" if principal.prefix else None,
            "team": principal.team_name or None,
            "allowed_models": sorted(principal.allowed_models) or None,
            "expires_at": (
                dt.datetime.fromtimestamp(principal.expires_at, dt.UTC).isoformat()
                if principal.expires_at
                else None
            ),
        },
        "limits": quotas,
        "usage": usage,
    }


async def count_request(principal: Principal) -> dict[str, str]:
    """
    Count a request that calls no model (GET /v1/me) against the key's request limits, as
    every request is: a 429 past them. Returns the x-ratelimit-* headers.
    """
    store, subject = get_quota_store(), principal.quota
    if subject.unlimited:
        return {}
    reservation = await store.reserve(subject, tokens=0)
    await store.settle(reservation, used_tokens=0)
    return reservation.headers


def _ledger_usage(prefix: str, now: dt.datetime) -> dict:
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    return {
        "today": key_totals(key_prefix=prefix, since=today),
        "this_month": key_totals(key_prefix=prefix, since=month),
    }


_ledger_usage_in_thread = in_database_thread(_ledger_usage)
