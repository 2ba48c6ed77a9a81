"""
Key lookups, cached in the process.

A lookup result (the caller, or "no such key") is kept for `API_KEYS__CACHE_SECONDS`
(2 s by default), so the request path costs a dict lookup and the database sees one query per
key and period. That period is the bound on how long a revoked key keeps working in another
worker; in the worker that revoked it (the admin, or `revoke_api_key` run in-process) the
entry is dropped at once. Expiry is checked on every request from the cached expiry time,
so an expired key stops at the exact second.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.conf import settings

from accounts.keys import secret_matches, split_key
from accounts.principals import Principal
from infra.database import in_database_thread
from infra.runtime import get_runtime
from limits.quotas import QuotaSubject

if TYPE_CHECKING:
    from accounts.models import ApiKey

# Bounded: a flood of made-up keys can cost memory only up to this many entries.
MAX_CACHED_KEYS = 10_000
NOT_CACHED = object()


class KeyCacheState:
    """The runtime's cache of callers by key, and when each key was last seen."""

    SETTINGS = ("API_KEYS_CACHE_SECONDS",)

    def __init__(self) -> None:
        self.seconds: float = settings.API_KEYS_CACHE_SECONDS
        # candidate key -> (monotonic time fetched, Principal or None for "not a valid key")
        self.cache: dict[str, tuple[float, Principal | None]] = {}
        # key id -> Unix time last seen; written to the database off the request path.
        self.last_used: dict[int, float] = {}


def _state() -> KeyCacheState:
    return get_runtime().part(KeyCacheState)


def cached_principal(candidate: str):
    """The cached caller for this key, None when it is known to be invalid, or NOT_CACHED."""
    state = _state()
    entry = state.cache.get(candidate)
    if entry is None or time.monotonic() - entry[0] > state.seconds:
        return NOT_CACHED
    principal = entry[1]
    if principal is not None:
        now = time.time()
        if principal.expires_at is not None and principal.expires_at <= now:
            return None
        state.last_used[principal.key_id] = now  # type: ignore[index]
    return principal


def load_principal(candidate: str) -> Principal | None:
    """Look a key up in the database (blocking) and cache the answer."""
    principal = _load(candidate)
    _remember(candidate, principal)
    return principal


def _remember(candidate: str, principal: Principal | None) -> None:
    state = _state()
    if len(state.cache) >= MAX_CACHED_KEYS:
        state.cache.clear()
    state.cache[candidate] = (time.monotonic(), principal)
    if principal is not None:
        state.last_used[principal.key_id] = time.time()  # type: ignore[index]


def _load(candidate: str) -> Principal | None:
    parts = split_key(candidate)
    if parts is None:
        return None
    prefix, secret = parts
    key = _api_keys().select_related("team").filter(prefix=prefix).first()
    if key is None or not secret_matches(secret, key.secret_hash) or not key.is_active:
        return None
    return _principal(key)


def active_principal_for_key_id(key_id: int) -> Principal | None:
    """
    The caller of a key by its id (blocking), for work done later on its behalf (a batch);
    None when the key is gone, revoked or expired.
    """
    key = _api_keys().select_related("team").filter(pk=key_id).first()
    if key is None or not key.is_active:
        return None
    return _principal(key)


def session_candidate(prefix: str) -> str:
    """
    The cache entry of a browser session opened with the key `prefix`. It starts like the
    key, so `forget_key` drops it with the key's own entry. "#" never occurs in a real key,
    and authentication refuses a presented key that contains one, so no header can reach
    this entry.
    """
    return f"llm_{prefix}_#session"


def load_session_principal(prefix: str) -> Principal | None:
    """
    The caller of a browser session opened with the key `prefix` (blocking, cached). Its
    session names the prefix and the secret was checked at log-in: the key only has to
    be still active.
    """
    key = _api_keys().select_related("team").filter(prefix=prefix).first()
    principal = None if key is None or not key.is_active else _principal(key)
    _remember(session_candidate(prefix), principal)
    return principal


async def alookup_session_principal(prefix: str) -> Principal | None:
    cached = cached_principal(session_candidate(prefix))
    if cached is not NOT_CACHED:
        return cached
    return await _load_session_in_thread(prefix)


def _api_keys():
    # Imported here: DRF imports the authentication classes (and so this module) while
    # uvicorn configures logging in a new worker, before Django's apps are loaded.
    from accounts.models import ApiKey

    return ApiKey.objects


def _principal(key: ApiKey) -> Principal:
    team = key.team
    return Principal(
        kind="key",
        key_id=key.pk,
        prefix=key.prefix,
        name=key.name,
        team_id=team.pk,
        team_name=team.name,
        allowed_models=frozenset(key.allowed_models or ()),
        team_models=frozenset(team.allowed_models or ()),
        expires_at=key.expires_at.timestamp() if key.expires_at else None,
        quota=QuotaSubject(
            key_id=str(key.pk),
            key_limits=key.limits(),
            team_id=str(team.pk),
            team_limits=team.limits(),
        ),
        team_weight=team.weight,
        priority=key.priority,
    )


async def alookup_principal(candidate: str) -> Principal | None:
    """The caller for this key: from the cache, or from the database in a thread."""
    cached = cached_principal(candidate)
    if cached is not NOT_CACHED:
        return cached
    return await _load_in_thread(candidate)


def forget_key(prefix: str) -> None:
    """Drop every cached entry of this key prefix (after a revocation or an edit)."""
    marker = f"llm_{prefix}_"
    cache = _state().cache
    for candidate in [c for c in cache if c.startswith(marker)]:
        cache.pop(candidate, None)


def forget_all() -> None:
    _state().cache.clear()


def take_last_used() -> dict[int, float]:
    """The keys seen since the last call, with when (and forget them)."""
    state = _state()
    taken, state.last_used = state.last_used, {}
    return taken


_load_in_thread = in_database_thread(load_principal)
_load_session_in_thread = in_database_thread(load_session_principal)
