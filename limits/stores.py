"""The process's quota store: shared through Redis when REDIS_URL is set, else in-process."""

from __future__ import annotations

from limits import redis_client
from limits.quotas import InProcessQuotaStore, QuotaStore
from limits.redis_quotas import RedisQuotaStore

_store: QuotaStore | None = None


def get_quota_store() -> QuotaStore:
    """The process's store, made on first use (the settings are read then)."""
    global _store
    if _store is None:
        _store = RedisQuotaStore() if redis_client.enabled() else InProcessQuotaStore()
    return _store
