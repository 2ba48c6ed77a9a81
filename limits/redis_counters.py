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

import asyncio
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.runtime import get_runtime
from limits import redis_client
from limits.per_loop import PerLoop
from limits.redis_client import RedisUnreachable

# KEYS: the counters. ARGV: required (1/0), extra copies wanted, then per counter 5 values:
# limit, amount, bucket ms, buckets, offset ms (where its windows start: 0 for windows aligned
# on the epoch, a calendar month's first millisecond for a monthly budget), and last the time
# in ms (-1: the Redis server's clock).
# Over (only when required): {0, index of the first counter over (1-based), retry-after ms or
# -1 if it never fits}.
# Admitted: {1, extra copies granted, then per counter: bucket, remaining, reset-after ms}.
# Extra copies (the same amounts again, for `RedisQuotaStore`'s reservations made ahead) are
# granted one by one while every counter keeps at least half its limit free after them.
_RESERVE = """
local now = tonumber(ARGV[#ARGV])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local required, wanted = tonumber(ARGV[1]), tonumber(ARGV[2])
local plan = {}
for i = 1, #KEYS do
  local at = 2 + (i - 1) * 5
  local limit, amount = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local size, buckets = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local offset = tonumber(ARGV[at + 5])
  -- a sub-window counts while fewer than `span` sub-windows have started since it began
  local span = buckets == 1 and 1 or buckets + 1
  local current = math.floor((now - offset) / size)
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
  if required == 1 and used + amount > limit then
    if amount > limit then return {0, i, -1} end
    local freed, need = 0, used + amount - limit
    for _, entry in ipairs(live) do
      freed = freed + entry[2]
      if freed >= need then return {0, i, (entry[1] + span) * size + offset - now} end
    end
    return {0, i, size}
  end
  local first = live[1] and live[1][1] or current
  plan[i] = {current, limit, used, amount, (first + span) * size + offset - now, span * size}
end
local extra = 0
while extra < wanted do
  local copies = required + extra + 1
  for i = 1, #KEYS do
    local p = plan[i]
    if (p[2] - p[3] - p[4] * copies) * 2 < p[2] then copies = nil break end
  end
  if not copies then break end
  extra = extra + 1
end
local copies = required + extra
local reply = {1, extra}
for i = 1, #KEYS do
  local p = plan[i]
  if p[4] ~= 0 and copies > 0 then redis.call('HINCRBY', KEYS[i], p[1], p[4] * copies) end
  if copies > 0 then redis.call('PEXPIRE', KEYS[i], p[6] + 1000) end
  reply[#reply + 1] = p[1]
  reply[#reply + 1] = p[2] - p[3] - p[4] * copies
  reply[#reply + 1] = p[5]
end
return reply
"""

# KEYS: the counters. ARGV: per counter, 5 values: bucket reserved in, delta, bucket ms,
# buckets, offset ms. The delta goes to the bucket the amount was reserved in; if that bucket has left
# the window, a positive delta (more used than reserved) goes to the current one, a negative
# one is dropped (it would free room that has already come back). Never below zero.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  local at = (i - 1) * 5
  local bucket, delta = ARGV[at + 1], tonumber(ARGV[at + 2])
  local size, buckets = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local offset = tonumber(ARGV[at + 5])
  local span = buckets == 1 and 1 or buckets + 1
  if delta ~= 0 then
    if redis.call('HEXISTS', KEYS[i], bucket) == 0 then
      bucket = delta > 0 and tostring(math.floor((now - offset) / size)) or nil
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
    # Where the windows start, in ms since the epoch modulo nothing: 0 aligns them on
    # multiples of `window`; a monthly budget's counter (one key per calendar month) starts
    # at the month's first millisecond and lasts the month.
    offset_ms: int = 0

    def __post_init__(self) -> None:
        if self.limit < 0 or self.window <= 0 or self.buckets < 1:
            raise ValueError(f"invalid counter {self!r}")
        if self.window * 1000 < self.buckets:
            raise ValueError(f"counter {self.key!r}: sub-windows shorter than 1 ms")

    @functools.cached_property
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
    the policy `open` admitted without counting. `extra`: copies of the same amounts reserved
    besides (`reserve`'s `extra`).
    """

    admitted: bool
    counters: tuple[Counter, ...]
    states: tuple[CounterState, ...] = ()
    over: Counter | None = None
    retry_after: float | None = None
    counted: bool = True
    buckets: tuple[int, ...] = ()  # where each amount went, for `settle`
    extra: int = 0
    keys: tuple[str, ...] = ()  # the counters' Redis keys, for `settle`


# A bounded memo of a pure function of (prefix, counter key), process-wide by nature.
_redis_keys: dict[tuple[str, str], str] = {}


def _redis_key(counter: Counter) -> str:
    prefix = redis_client.config().key_prefix
    key = _redis_keys.get((prefix, counter.key))
    if key is None:
        if len(_redis_keys) > 100_000:
            _redis_keys.clear()
        key = _redis_keys[(prefix, counter.key)] = redis_client.key("counters", counter.key)
    return key


async def reserve(
    counters: Sequence[Counter],
    *,
    extra: int = 0,
    required: bool = True,
    now: float | None = None,
) -> Reservation:
    """
    Check every counter and, if all have room, add each one's amount (one atomic round trip).

    `extra`: also reserve up to this many more copies of the same amounts, each only while
    every counter keeps at least half its limit free after it (the reply's `extra` says how
    many). `required=False` reserves only such copies, and is never refused (`extra` may be 0).
    `now` (seconds since the epoch) replaces the Redis server's clock, for tests and replays.

    Raises `LimitsUnavailable` when Redis is unreachable under `LIMITS__ON_REDIS_ERROR=closed`.
    """
    counters = tuple(counters)
    if not counters:
        return Reservation(admitted=True, counters=counters)
    try:
        future, keys = _send(counters, extra, required, now)
        reply = await future
    except RedisUnreachable:
        error = redis_client.unavailable()
        if error is not None:
            raise error from None
        return Reservation(admitted=True, counters=counters, counted=False)
    return _parse(counters, keys, reply)


def reserve_copies_later(
    counters: Sequence[Counter], copies: int, then: Callable[[Reservation | None], None]
) -> None:
    """
    `reserve(counters, extra=copies, required=False)` without waiting: `then` gets the
    outcome when it comes (None when Redis could not be reached).
    """
    counters = tuple(counters)
    try:
        future, keys = _send(counters, copies, False)
    except RedisUnreachable:
        then(None)
        return

    def done(future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            then(None)
        else:
            then(_parse(counters, keys, future.result()))

    future.add_done_callback(done)


def _send(
    counters: tuple[Counter, ...], extra: int, required: bool, now: float | None = None
) -> tuple[asyncio.Future[Any], list[str]]:
    args: list[int] = [1 if required else 0, extra]
    for counter in counters:
        args += [
            counter.limit,
            counter.amount,
            counter.bucket_ms,
            counter.buckets,
            counter.offset_ms,
        ]
    args.append(-1 if now is None else int(now * 1000))
    keys = [_redis_key(c) for c in counters]
    return redis_client.run_script("counters", _RESERVE, keys, args), keys


def _parse(counters: tuple[Counter, ...], keys: list[str], reply: list[Any]) -> Reservation:
    if reply[0] == 0:
        over = counters[int(reply[1]) - 1]
        retry_ms = int(reply[2])
        return Reservation(
            admitted=False,
            counters=counters,
            over=over,
            retry_after=None if retry_ms < 0 else max(retry_ms, 1) / 1000,
        )
    values = [int(v) for v in reply[2:]]
    return Reservation(
        admitted=True,
        counters=counters,
        states=tuple(
            CounterState(c.key, values[3 * i + 1], max(values[3 * i + 2], 0) / 1000)
            for i, c in enumerate(counters)
        ),
        buckets=tuple(values[3 * i] for i in range(len(counters))),
        extra=int(reply[1]),
        keys=tuple(keys),
    )


async def settle(reservation: Reservation, actual: Sequence[int]) -> None:
    """`settle_later`, for callers that await their settlement."""
    settle_later(reservation, actual)


def settle_later(reservation: Reservation, actual: Sequence[int]) -> None:
    """
    Correct an admitted reservation with the real amount per counter (same order as the
    counters): the difference from what was reserved is added (or given back). Sent after the
    answer, without waiting for Redis: the corrections of one counter's window add up until
    the next pipeline leaves (`redis_client.on_next_send`), and all of them go in one script
    call. Best effort: when Redis is unreachable the estimate stands.
    """
    if not reservation.admitted or not reservation.counted or not reservation.counters:
        return
    if len(actual) != len(reservation.counters):
        raise ValueError("one actual amount per counter")
    pending: dict[tuple[str, int, int, int, int], int] | None = None
    for key, counter, bucket, amount in zip(
        reservation.keys, reservation.counters, reservation.buckets, actual, strict=True
    ):
        delta = amount - counter.amount
        if delta:
            if pending is None:
                pending = _settlements()
                if pending is None:
                    return  # Redis is paused after a failure: the estimate stands
            where = (key, bucket, counter.bucket_ms, counter.buckets, counter.offset_ms)
            pending[where] = pending.get(where, 0) + delta


# Settlements wait at most this long for a pipeline to ride along with (a busy key's next
# reservations made ahead, another request's round trip), then go on their own.
SETTLE_WITHIN = 0.025


@dataclass(slots=True)
class _Settlements:
    """A loop's settlements waiting for the next pipeline: a delta per (Redis key, bucket,
    bucket ms, buckets, offset ms)."""

    deltas: dict[tuple[str, int, int, int, int], int] = field(default_factory=dict)
    scheduled: bool = False


class SettlementsState:
    """The runtime's settlements waiting for the next pipeline, per event loop."""

    def __init__(self) -> None:
        self.pending: PerLoop[_Settlements] = PerLoop(_Settlements)


def _settlements() -> dict[tuple[str, int, int, int, int], int] | None:
    """This loop's settlements to add to, sent just before the next pipeline leaves."""
    pending = get_runtime().part(SettlementsState).pending.get()
    if not pending.scheduled:
        send = functools.partial(_send_settlements, pending)
        if not redis_client.on_next_send(send, within=SETTLE_WITHIN):
            return None
        pending.scheduled = True
    return pending.deltas


def _send_settlements(pending: _Settlements) -> None:
    deltas, pending.deltas, pending.scheduled = pending.deltas, {}, False
    keys: list[str] = []
    args: list[int] = []
    for (key, bucket, bucket_ms, buckets, offset_ms), delta in deltas.items():
        if delta:
            keys.append(key)
            args += [bucket, delta, bucket_ms, buckets, offset_ms]
    if keys:
        redis_client.run_script_later("counters settle", _SETTLE, keys, args)
