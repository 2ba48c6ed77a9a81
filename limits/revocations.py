"""
Key revocation pushed to every gateway process.

A revoked API key must stop working everywhere at once, not only in the process whose cache
learnt it. `publish_revocation(key)` sends the key's id (or a prefix; the payload is opaque
text to this module) on a Redis channel; every process listens (the listener starts at
lifespan start-up) and calls the callbacks registered with `on_revocation`, within
milliseconds.

Pub/sub does not keep messages for a subscriber that was disconnected. After its listener
reconnects, every callback is called with `EVERYTHING` ("*"): a revocation may have been
missed, so drop the whole cache.

Without REDIS_URL there are no other processes to tell: publishing calls this process's
callbacks directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from limits import redis_client, redis_events
from limits.exceptions import LimitsUnavailable

logger = logging.getLogger("limits.revocations")

CHANNEL = "revocations"
EVERYTHING = "*"  # the payload after a reconnect: anything may have been revoked meanwhile

# Wiring, not state: code registers its callbacks once (accounts at app start-up), as it
# connects a signal.
_callbacks: list[Callable[[str], None]] = []


def on_revocation(callback: Callable[[str], None]) -> None:
    """
    Call `callback(revoked)` in every process whenever a key is revoked anywhere; `revoked`
    is what was published, or `EVERYTHING`. Runs on the event loop: keep it quick.
    """
    if callback not in _callbacks:
        _callbacks.append(callback)


def remove_callback(callback: Callable[[str], None]) -> None:
    if callback in _callbacks:
        _callbacks.remove(callback)


def _deliver(revoked: str) -> None:
    for callback in list(_callbacks):
        try:
            callback(revoked)
        except Exception:  # one faulty callback must not keep the others from running
            logger.exception("revocation callback %r failed", callback)


redis_events.subscribe(
    CHANNEL,
    lambda payload: _deliver(payload.decode()),
    on_reconnect=lambda: _deliver(EVERYTHING),
)


async def publish_revocation(revoked: str) -> int:
    """
    Tell every process (this one included) that `revoked` no longer works. Returns how many
    processes were listening. Raises `LimitsUnavailable` if Redis is unreachable, whatever
    the error policy: a revocation that silently reached nobody would be worse.
    """
    if not revoked or revoked == EVERYTHING:
        raise ValueError("give the revoked key's id or prefix")
    if not redis_client.enabled():
        _deliver(revoked)
        return 1
    try:
        return int(
            await redis_client.command("revocation", "PUBLISH", redis_client.key(CHANNEL), revoked)
        )
    except redis_client.RedisUnreachable:
        # This process at least stops accepting the key.
        _deliver(revoked)
        raise LimitsUnavailable(
            "The key was revoked here, but other gateway processes could not be told (Redis "
            "is unreachable); they accept it until their key cache expires."
        ) from None
