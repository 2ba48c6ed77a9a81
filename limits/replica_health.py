"""
Replica health shared by every gateway process: outlier ejection like Envoy's, where a
replica that fails `eject_after` times in a row is skipped for `eject_seconds`, then tried
again; one more failure ejects it again, one success restores it.

Without Redis each process counts for itself. With Redis the consecutive-failure count and
the ejection are shared (two small hashes, updated by one Lua script per report), so a
replica that fails for one worker is skipped by all of them.

The hot path never waits for Redis: `is_ejected` reads a local view that a background task
refreshes every `REFRESH_SECONDS` (one round trip for all replicas), and `succeeded` only
makes a round trip when the replica is known to have failures to clear. Another process's
failure may therefore be seen up to about a second late. A failure reported here is seen
here at once. If Redis is unreachable, the local counts stand in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass

from infra.runtime import get_runtime
from limits import redis_client
from limits.redis_client import RedisUnreachable

logger = logging.getLogger("limits.replicas")

REFRESH_SECONDS = 1.0
KEEP_MS = 24 * 3600 * 1000  # untouched health data disappears after a day
_SEP = "\x1f"  # between model and location in a hash field (neither contains it)

# KEYS: failures hash, ejected hash. ARGV: field, eject_after, eject ms, keep ms.
# Returns {consecutive failures, 1 if ejected now else 0}.
_FAILED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if count >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {count, 1}
end
return {count, 0}
"""

# KEYS: failures hash, ejected hash. ARGV: field.
_SUCCEEDED = """
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
"""

# KEYS: failures hash, ejected hash. Returns {failures (field, count, ...), ejected (field,
# remaining ms, ...)} and forgets ejections that ended.
_VIEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ejected, ended = {}, {}
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local left = tonumber(entries[i + 1]) - now
  if left > 0 then
    ejected[#ejected + 1] = entries[i]
    ejected[#ejected + 1] = left
  else
    ended[#ended + 1] = entries[i]
  end
end
if #ended > 0 then redis.call('HDEL', KEYS[2], unpack(ended)) end
return {redis.call('HGETALL', KEYS[1]), ejected}
"""


@dataclass
class _View:
    failures: dict[tuple[str, str], int]
    ejected_until: dict[tuple[str, str], float]  # time.monotonic() deadlines


class ReplicaHealthState:
    """The runtime's view of replica health (the one record of it), and its refreshers."""

    def __init__(self) -> None:
        self.view = _View({}, {})
        # Local changes so far: a refresh whose reply comes back after one is not applied (its
        # view predates the change; the next refresh brings the shared view with it).
        self.changes = 0
        self.refreshers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Task[None]
        ] = weakref.WeakKeyDictionary()


def _state() -> ReplicaHealthState:
    return get_runtime().part(ReplicaHealthState)


def _keys() -> list[str]:
    return [redis_client.key("replicas", "failures"), redis_client.key("replicas", "ejected")]


def is_ejected(model: str, replica_location: str) -> bool:
    """Whether the replica is skipped now, from the local view (no round trip)."""
    ensure_refresher()
    return _state().view.ejected_until.get((model, replica_location), 0.0) > time.monotonic()


async def failed(
    model: str, replica_location: str, *, eject_after: int, eject_seconds: float
) -> bool:
    """Count a failure of the replica; True when it is ejected by this failure."""
    replica = (model, replica_location)
    state = _state()
    count = state.view.failures.get(replica, 0) + 1
    ejected = count >= eject_after
    if redis_client.enabled():
        field = _SEP.join(replica)
        try:
            count, ejected_flag = await redis_client.run_script(
                "replica health",
                _FAILED,
                _keys(),
                [field, eject_after, int(eject_seconds * 1000), KEEP_MS],
            )
            ejected = bool(ejected_flag)
        except RedisUnreachable:
            pass  # counted locally meanwhile
    state.changes += 1
    state.view.failures[replica] = count
    if ejected:
        state.view.ejected_until[replica] = time.monotonic() + eject_seconds
    return ejected


async def succeeded(model: str, replica_location: str) -> None:
    """A success: the replica's failures are cleared and it is restored if it was ejected."""
    replica = (model, replica_location)
    state = _state()
    if replica not in state.view.failures and replica not in state.view.ejected_until:
        return  # nothing to clear, as far as the last refresh knows: no round trip
    state.changes += 1
    state.view.failures.pop(replica, None)
    state.view.ejected_until.pop(replica, None)
    if redis_client.enabled():
        field = _SEP.join(replica)
        with contextlib.suppress(RedisUnreachable):
            await redis_client.run_script("replica health", _SUCCEEDED, _keys(), [field])


async def refresh() -> None:
    """Replace the local view with the shared one (one round trip)."""
    if not redis_client.enabled():
        return
    state = _state()
    changes = state.changes
    failures, ejected = await redis_client.run_script("replica health", _VIEW, _keys(), [])
    if state.changes != changes:
        return
    now = time.monotonic()
    view = _View({}, {})
    for i in range(0, len(failures), 2):
        model, _, location = failures[i].decode().partition(_SEP)
        view.failures[(model, location)] = int(failures[i + 1])
    for i in range(0, len(ejected), 2):
        model, _, location = ejected[i].decode().partition(_SEP)
        view.ejected_until[(model, location)] = now + int(ejected[i + 1]) / 1000
    state.view = view


def ensure_refresher() -> None:
    """Start this event loop's refresher unless it runs (no-op without REDIS_URL)."""
    if not redis_client.enabled():
        return
    loop = asyncio.get_running_loop()
    refreshers = _state().refreshers
    task = refreshers.get(loop)
    if task is None or task.done():
        refreshers[loop] = redis_client.spawn(_refresh_forever(), name="limits-replica-health")


async def stop_refresher() -> None:
    task = _state().refreshers.pop(asyncio.get_running_loop(), None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _refresh_forever() -> None:
    # Checking `cancelling()` as well: a cancellation that lands inside redis-py can come
    # out as an ordinary error (or none), and this loop must still end when stopped.
    while not redis_client.stopping():
        with contextlib.suppress(RedisUnreachable):  # logged by redis_client; keep the view
            await refresh()
        await asyncio.sleep(REFRESH_SECONDS)
