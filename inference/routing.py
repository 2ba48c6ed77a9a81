"""
Which of a model's replicas a request goes to.

Each model chooses one policy in the catalog (`routing:`; see docs/routing.md):

* `prefix`, the default for a model with several servers: a request goes to the replica that
  most likely holds the KV cache of its longest prefix, unless that replica is loaded beyond
  the bound, where load wins. Model servers (vLLM, SGLang, llama.cpp) keep the KV cache of
  recent prompts, so an agent's next turn, which resends the whole conversation, skips most
  of its prefill on the replica that served the previous turn.
* `least_busy`: the replica with the lowest load, ties shared in turn.
* `round_robin`: each replica in turn, ignoring load.

**Prefixes.** A chat request's prompt is hashed at each message boundary (tool definitions
first, then each message, chained: `key[i]` covers messages `0..i`), a legacy completion's
prompt at every `PROMPT_BLOCK_CHARS` characters. The keys of the first boundaries and of the
whole prompt are recorded against the replica the request went to (`PlacementTable`, shared
through Redis when `REDIS_URL` is set); the next request looks its own keys up (the first and
the last few boundaries), longest first. Turn `n + 1` of a conversation contains turn `n`'s
whole prompt, so it finds turn `n`'s placement; a new conversation sharing a system prompt
finds the placement of that system prompt.

**Bounded load** (as in consistent hashing with bounded loads, Mirrokni et al. 2018): with
`n` candidate replicas carrying `m` requests in total, the replica holding a prefix keeps it
only while taking the request leaves it at most `ceil(load_factor * (m + 1) / n)`. A prefix
whose replica is over that bound, and a prefix never seen, go to the least loaded replica,
ties broken by the prefix's rendezvous-hash order, so every gateway process picks the same one
given the same loads; the conversation's next turns then follow it there.

**Health.** Ejected replicas are not candidates (`limits.replica_health`, the one record of
replica health). A failure voids at once every placement on the replica made before it, here
and, through Redis, in every process, so its conversations move on their next turn.

`place` is a pure function of the state, which is what the tests pin down.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from limits import redis_client
from limits.redis_client import RedisUnreachable

# A legacy completion's prompt (one string) has no message boundaries: cut it in blocks.
PROMPT_BLOCK_CHARS = 2048
# The boundaries looked up: the first ones (system prompt, tool definitions, a shared first
# question) and the last ones (where an earlier turn ended). Recorded: the first ones and the
# whole prompt, which is where the next turn starts from (one new key per turn).
FIRST_BOUNDARIES = 2
LAST_BOUNDARIES = 16
# A load read from a server is trusted this many scrape intervals after it was read.
FRESH_INTERVALS = 3


# --- Prefixes ---------------------------------------------------------------------------------


def prefix_keys(payload: dict[str, Any]) -> tuple[str, ...]:
    """
    Digests of the request's prompt up to each of its sampled boundaries, shortest first
    (empty when the request has no prompt to speak of, such as an embeddings request).
    """
    digest = hashlib.blake2b(digest_size=16)
    boundaries: list[str] = []
    messages = payload.get("messages")
    if isinstance(messages, list) and messages:
        tools = payload.get("tools")
        try:
            if tools:
                digest.update(orjson.dumps(tools))
            for message in messages:
                digest.update(orjson.dumps(message))
                boundaries.append(digest.hexdigest())
        except TypeError:  # not JSON data: nothing to place by
            return ()
    else:
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            return ()
        for start in range(0, len(prompt), PROMPT_BLOCK_CHARS):
            digest.update(prompt[start : start + PROMPT_BLOCK_CHARS].encode())
            boundaries.append(digest.hexdigest())
    if len(boundaries) > FIRST_BOUNDARIES + LAST_BOUNDARIES:
        boundaries = boundaries[:FIRST_BOUNDARIES] + boundaries[-LAST_BOUNDARIES:]
    return tuple(boundaries)


def recorded_keys(keys: Sequence[str]) -> tuple[str, ...]:
    """Of a request's `prefix_keys`, the ones to place: the first boundaries and the last."""
    return tuple(dict.fromkeys((*keys[:FIRST_BOUNDARIES], *keys[-1:])))


# --- Load -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerLoad:
    """A replica's load as the server reports it (`inference.replica_load`)."""

    running: float
    waiting: float
    kv_cache_usage: float | None = None  # 0..1 where the server says
    source: str = ""  # "vllm", "llama.cpp metrics", "llama.cpp slots", "llmapi"

    @property
    def requests(self) -> float:
        return self.running + self.waiting


@dataclass(eq=False)
class ReplicaLoad:
    """
    What routing knows of one replica's load: the gateway's own requests in flight and the
    server's last reported load.
    """

    in_flight: int = 0
    server: ServerLoad | None = None
    read_at: float = 0.0  # time.monotonic() of `server`
    in_flight_at_read: int = 0

    def observe(self, server: ServerLoad | None, now: float) -> None:
        self.server = server
        self.read_at = now
        self.in_flight_at_read = self.in_flight

    def current(self, now: float, *, fresh_for: float) -> float:
        """
        The load to balance on: the server's count (every gateway's requests, and others')
        plus what this process sent since it was read; the gateway's own in-flight count when
        the server publishes none or the last reading is stale.
        """
        if self.server is None or now - self.read_at > fresh_for:
            return float(self.in_flight)
        since = self.in_flight - self.in_flight_at_read
        return max(float(self.in_flight), self.server.requests + since)


# --- The decision -----------------------------------------------------------------------------


def capacity(loads: Sequence[float], load_factor: float) -> float:
    """The most requests one replica may carry after taking one more (bounded loads)."""
    return math.ceil(load_factor * (sum(loads) + 1) / len(loads))


def rendezvous_order(key: str, locations: Sequence[str]) -> list[int]:
    """Indexes of `locations` in highest-random-weight order for `key` (same in every process)."""

    def weight(index: int) -> bytes:
        return hashlib.blake2b(f"{key}\x1f{locations[index]}".encode(), digest_size=8).digest()

    return sorted(range(len(locations)), key=weight, reverse=True)


def place(
    locations: Sequence[str],
    loads: Sequence[float],
    *,
    anchor: str,
    holder: str | None,
    load_factor: float,
) -> tuple[int, str]:
    """
    The index of the replica for a request, and why: `affinity` (the replica holding its
    longest known prefix, under the bound), `spill` (that replica is over the bound) or `new`
    (no known prefix). A spilled or new request goes to the least loaded replica, ties broken
    by the rendezvous order of `anchor` (the request's longest key), so that equal states give
    equal answers in every process and new conversations spread evenly.
    """
    bound = capacity(loads, load_factor)
    reason = "new"
    if holder is not None and holder in locations:
        index = locations.index(holder)
        if loads[index] + 1 <= bound:
            return index, "affinity"
        reason = "spill"
    order = rendezvous_order(anchor, locations)
    return min(order, key=lambda i: loads[i]), reason


# --- Placements -------------------------------------------------------------------------------

# KEYS: failures hash, then placement keys longest first. Returns {index of the key, location}
# of the first placement made after its replica's last failure, or false.
_LOOKUP = """
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v then
    local sep = string.find(v, '|', 1, true)
    local at = tonumber(string.sub(v, 1, sep - 1))
    local location = string.sub(v, sep + 1)
    local failed = tonumber(redis.call('HGET', KEYS[1], location) or '0')
    if at > failed then return {i - 2, location} end
  end
end
return false
"""

# KEYS: placement keys. ARGV: location, keep ms.
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local value = now .. '|' .. ARGV[1]
for i = 1, #KEYS do redis.call('SET', KEYS[i], value, 'PX', ARGV[2]) end
return 1
"""

# KEYS: failures hash. ARGV: location, keep ms.
_FORGET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


@dataclass(eq=False)
class PlacementTable:
    """
    Recent placements of one model: prefix key -> (replica location, when). In process, a
    bounded LRU table; with Redis, also one key per prefix with a time to live, read with
    one round trip per request and written after the decision without waiting. When Redis
    cannot be reached the process's own table answers.
    """

    model: str
    keep_seconds: float = 600.0
    max_entries: int = 100_000
    _local: OrderedDict[str, tuple[str, float]] = field(default_factory=OrderedDict)
    _failed_at: dict[str, float] = field(default_factory=dict)

    def _key(self, prefix: str) -> str:
        return redis_client.key("routing", self.model, prefix)

    def _failures_key(self) -> str:
        return redis_client.key("routing", self.model, "failed")

    async def holder(self, keys: Sequence[str]) -> str | None:
        """The replica of the longest of `keys` placed since that replica last failed."""
        if not keys:
            return None
        if redis_client.enabled():
            try:
                found = await redis_client.run_script(
                    "routing lookup",
                    _LOOKUP,
                    [self._failures_key(), *(self._key(k) for k in reversed(keys))],
                    [],
                )
            except RedisUnreachable:
                pass  # the process's own placements stand in
            else:
                if not found:
                    return None
                location = found[1]
                return location.decode() if isinstance(location, bytes) else str(location)
        return self._local_holder(keys)

    def _local_holder(self, keys: Sequence[str]) -> str | None:
        now = time.monotonic()
        for key in reversed(keys):
            entry = self._local.get(key)
            if entry is None:
                continue
            location, at = entry
            if now - at > self.keep_seconds:
                del self._local[key]
                continue
            if at > self._failed_at.get(location, -math.inf):
                return location
        return None

    def record(self, keys: Sequence[str], location: str) -> None:
        """Place `keys` on `location` (the Redis write goes out without being waited for)."""
        if not keys:
            return
        now = time.monotonic()
        for key in keys:
            self._local[key] = (location, now)
            self._local.move_to_end(key)
        while len(self._local) > self.max_entries:
            self._local.popitem(last=False)
        if redis_client.enabled():
            redis_client.run_script_later(
                "routing record",
                _RECORD,
                [self._key(k) for k in keys],
                [location, int(self.keep_seconds * 1000)],
            )

    def forget(self, location: str) -> None:
        """Void every placement on `location` made until now, here and in other processes."""
        self._failed_at[location] = time.monotonic()
        if redis_client.enabled():
            redis_client.run_script_later(
                "routing forget",
                _FORGET,
                [self._failures_key()],
                [location, int(self.keep_seconds * 1000)],
            )
