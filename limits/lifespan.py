"""
Start-up and shutdown of the shared limits, for the ASGI lifespan of each worker process.

    await limits.lifespan.start()   # at start-up, on the serving event loop
    await limits.lifespan.stop()    # at shutdown, after in-flight requests have finished

Both are no-ops without REDIS_URL. `start` never fails because Redis is down: the listener
and the refresher keep trying in the background, and the error policy covers requests.
"""

from __future__ import annotations

from limits import redis_client, redis_events, redis_slots, replica_health
from limits.stores import get_quota_store


async def start(*, connect_timeout: float = 1.0) -> bool:
    """
    Subscribe to key revocations and slot wake-ups, and start refreshing replica health.
    Waits at most `connect_timeout` seconds for the subscription; False if it is not there
    yet (Redis down: it keeps trying, and revocations are delivered once it is back).
    """
    if not redis_client.enabled():
        return True
    replica_health.ensure_refresher()
    return await redis_events.wait_connected(connect_timeout)


async def stop() -> None:
    """
    Give back what this worker kept for its next requests (reservations made ahead, slot
    leases to hand on), stop the background work (listener, refresher, lease renewals) and
    close the client.
    """
    if redis_client.enabled():
        await redis_client.flush()  # reservations being made ahead arrive first
        store = get_quota_store()
        give_back = getattr(store, "give_back_ahead", None)
        if give_back is not None:
            give_back()
        redis_slots.release_kept_leases()
    await redis_client.close()
