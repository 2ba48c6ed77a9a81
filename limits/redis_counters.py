"""
Rate and budget counters in Redis, checked and reserved together in one atomic round trip.

A request usually answers to several limits at once (its key's requests per minute, its key's
tokens per minute, its team's daily budget). `reserve` checks all of them and, only if every
one has room, adds each counter's amount; otherwise it adds nothing and names the first
counter over its limit, with when to retry. `settle` corrects a reservation afterwards by the
difference between the estimate and the real amount (tokens really used, a refund on error).

Windows (per counter, `buckets`):
- `buckets=1`: a fixed window aligned on multiples of its length (a per-minute limit resets at
  each minute of the Redis clock). Cheapest, but a client can pass twice the limit across a
  boundary.
- `buckets=n>1` (default 60): a sliding window kept as n sub-windows of window/n. An amount
  counts from when it was reserved until between `window` and `window + window/n` later (the
  sub-window it fell in must have left entirely), so no interval of `window` length ever sees
  more than `limit`; the price is that room comes back up to window/n late.

Amounts and limits are integers (money in micro-units). Each counter is a Redis hash of at
most n+1 fields with an expiry, so memory does not grow with traffic. All the counters of one
call must live on one Redis node (a single Redis, or one hash tag in their keys on a cluster).
Time is the Redis server's clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from limits import redis_client
from limits.redis_client import RedisUnreachable

# KEYS: the counters. ARGV: per counter, 4 values: limit, amount, bucket ms, buckets.
# Over: {0, index of the first counter over (1-based), retry-after ms or -1 if it never fits}.
# Admitted: {1, then per counter: bucket, remaining, reset-after ms}.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local plan = {}
for i = 1, #KEYS do
  local at = (i - 1) * 4
  local limit, amount = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local size, buckets = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  -- a sub-window counts while fewer than `span` sub-windows have started since it began
  local span = buckets == 1 and 1 or buckets + 1
  local current = math.floor(now / size)
  local entries = redis.call('HGETALL', KEYS[i])
  local used, live, stale = 0, {}, {}
  for j = 1, #entries, 2 do
    local bucket, value = tonumber(entries[j]), tonumber(entries[j + 1])
    if bucket <= current - span then
      stale[#stale + 1] = entries[j]
    elseif value > 0 then
      used = used + value
      live[#live + 1] = {bucket, value}
    end
  end
  if #stale > 0 then redis.call('HDEL', KEYS[i], unpack(stale)) end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  if used + amount > limit then
    if amount > limit then return {0, i, -1} end
    local freed, need = 0, used + amount - limit
    for _, entry in ipairs(live) do
      freed = freed + entry[2]
      if freed >= need then return {0, i, (entry[1] + span) * size - now} end
    end
    return {0, i, size}
  end
  local first = live[1] and live[1][1] or current
  plan[i] = {current, limit - used - amount, (first + span) * size - now, span * size}
end
local reply = {1}
for i = 1, #KEYS do
  local amount = tonumber(ARGV[(i - 1) * 4 + 2])
  if amount ~= 0 then redis.call('HINCRBY', KEYS[i], plan[i][1], amount) end
  redis.call('PEXPIRE', KEYS[i], plan[i][4] + 1000)
  reply[#reply + 1] = plan[i][1]
  reply[#reply + 1] = plan[i][2]
  reply[#reply + 1] = plan[i][3]
end
return reply
"""

# KEYS: the counters. ARGV: per counter, 4 values: bucket reserved in, delta, bucket ms,
# buckets. The delta goes to the bucket the amount was reserved in; if that bucket has left
# the window, a positive delta (more used than reserved) goes to the current one, a negative
# one is dropped (it would free room that has already come back). Never below zero.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  local at = (i - 1) * 4
  local bucket, delta = ARGV[at + 1], tonumber(ARGV[at + 2])
  local size, buckets = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local span = buckets == 1 and 1 or buckets + 1
  if delta ~= 0 then
    if redis.call('HEXISTS', KEYS[i], bucket) == 0 then
      bucket = delta > 0 and tostring(math.floor(now / size)) or nil
    end
    if bucket then
      if redis.call('HINCRBY', KEYS[i], bucket, delta) < 0 then
        redis.call('HSET', KEYS[i], bucket, 0)
      end
      redis.call('PEXPIRE', KEYS[i], span * size + 1000)
    end
  end
end
return 1
"""


@dataclass(frozen=True)
class Counter:
    """One limit: at most `limit` units per `window` seconds under `key`; this call adds `amount`."""

    key: str
    limit: int
    window: float
    amount: int = 1
    buckets: int = 60

    def __post_init__(self) -> None:
        if self.limit < 0 or self.window <= 0 or self.buckets < 1:
            raise ValueError(f"invalid counter {self!r}")
        if self.window * 1000 < self.buckets:
            raise ValueError(f"counter {self.key!r}: sub-windows shorter than 1 ms")

    @property
    def bucket_ms(self) -> int:
        return max(1, math.floor(self.window * 1000 / self.buckets))


@dataclass(frozen=True)
class CounterState:
    """After an admitted reservation: what is left, and in how many seconds room comes back."""

    key: str
    remaining: int
    reset_after: float


@dataclass(frozen=True)
class Reservation:
    """
    The outcome of `reserve`. Admitted: `states` per counter. Refused: `over` is the first
    counter over its limit, `retry_after` the seconds until it has room (None: the amount is
    larger than the limit and never fits). `counted` is False when Redis was unreachable and
    the policy `open` admitted without counting.
    """

    admitted: bool
    counters: tuple[Counter, ...]
    states: tuple[CounterState, ...] = ()
    over: Counter | None = None
    retry_after: float | None = None
    counted: bool = True
    buckets: tuple[int, ...] = ()  # where each amount went, for `settle`


def _redis_key(counter: Counter) -> str:
    return redis_client.key("counters", counter.key)


async def reserve(counters: Sequence[Counter]) -> Reservation:
    """
    Check every counter and, if all have room, add each one's amount (one atomic round trip).

    Raises `LimitsUnavailable` when Redis is unreachable under `LIMITS__ON_REDIS_ERROR=closed`.
    """
    counters = tuple(counters)
    if not counters:
        return Reservation(admitted=True, counters=counters)
    args: list[int] = []
    for counter in counters:
        args += [counter.limit, counter.amount, counter.bucket_ms, counter.buckets]
    try:
        reply = await redis_client.run_script(
            "counters", _RESERVE, [_redis_key(c) for c in counters], args
        )
    except RedisUnreachable:
        error = redis_client.unavailable()
        if error is not None:
            raise error from None
        return Reservation(admitted=True, counters=counters, counted=False)
    if reply[0] == 0:
        over = counters[int(reply[1]) - 1]
        retry_ms = int(reply[2])
        return Reservation(
            admitted=False,
            counters=counters,
            over=over,
            retry_after=None if retry_ms < 0 else max(retry_ms, 1) / 1000,
        )
    values = [int(v) for v in reply[1:]]
    return Reservation(
        admitted=True,
        counters=counters,
        states=tuple(
            CounterState(c.key, values[3 * i + 1], max(values[3 * i + 2], 0) / 1000)
            for i, c in enumerate(counters)
        ),
        buckets=tuple(values[3 * i] for i in range(len(counters))),
    )


async def settle(reservation: Reservation, actual: Sequence[int]) -> None:
    """
    Correct an admitted reservation with the real amount per counter (same order as the
    counters): the difference from what was reserved is added (or given back). Sent after the
    answer, without waiting for Redis (`redis_client.run_script_later`); best effort: when
    Redis is unreachable the estimate stands.
    """
    if not reservation.admitted or not reservation.counted or not reservation.counters:
        return
    if len(actual) != len(reservation.counters):
        raise ValueError("one actual amount per counter")
    keys: list[str] = []
    args: list[int] = []
    for counter, bucket, amount in zip(
        reservation.counters, reservation.buckets, actual, strict=True
    ):
        if amount != counter.amount:
            keys.append(_redis_key(counter))
            args += [bucket, amount - counter.amount, counter.bucket_ms, counter.buckets]
    if not keys:
        return
    redis_client.run_script_later("counters settle", _SETTLE, keys, args)
