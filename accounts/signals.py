"""
A key changed or was deleted: this worker forgets its cached lookup at once, and (with Redis)
every other gateway process is told to, once the change is committed.
"""

import asyncio
import logging

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts import selectors
from accounts.models import ApiKey, Team
from limits import redis_client, revocations
from limits.exceptions import LimitsUnavailable

logger = logging.getLogger(__name__)


@receiver([post_save, post_delete], sender=ApiKey)
def forget_cached_key(sender, instance: ApiKey, **kwargs) -> None:
    selectors.forget_key(instance.prefix)
    if kwargs.get("signal") is post_delete or instance.revoked:
        prefix = instance.prefix
        transaction.on_commit(lambda: announce_revocation(prefix))


@receiver([post_save, post_delete], sender=Team)
def forget_cached_team(sender, instance: Team, **kwargs) -> None:
    # A team's limits are copied into its keys' cached entries.
    selectors.forget_all()


def drop_revoked(revoked: str) -> None:
    """The revocation callback: drop a revoked key's cached lookups (or all, after a gap)."""
    if revoked == revocations.EVERYTHING:
        selectors.forget_all()
    else:
        selectors.forget_key(revoked.removeprefix("llm_").split("_", 1)[0])


def announce_revocation(prefix: str) -> None:
    """
    Publish a revocation to every gateway process (with Redis; without it, the other workers
    stop accepting the key when their cache entry expires, API_KEYS__CACHE_SECONDS).
    Called from sync code (the admin, `manage.py revoke_api_key`): on a loop of its own.
    """
    if not redis_client.enabled():
        return

    async def publish() -> None:
        try:
            await revocations.publish_revocation(prefix)
        finally:
            await redis_client.close()

    try:
        asyncio.run(publish())
    except LimitsUnavailable as exc:
        logger.warning("%s", exc)
