"""The runtime's quota store: shared through Redis when REDIS_URL is set, else in-process."""

from __future__ import annotations

from infra.runtime import get_runtime
from limits import redis_client
from limits.quotas import InProcessQuotaStore, QuotaStore
from limits.redis_quotas import RedisQuotaStore


class QuotaStoreState:
    """The store, made when the runtime first needs it (the settings are read then)."""

    SETTINGS = ("SHARED_LIMITS",)

    def __init__(self, store: QuotaStore | None = None) -> None:
        if store is None:
            store = RedisQuotaStore() if redis_client.enabled() else InProcessQuotaStore()
        self.store = store


def get_quota_store() -> QuotaStore:
    return get_runtime().part(QuotaStoreState).store
