"""
Per-key and per-team quotas counted in Redis, shared by every gateway process: the same
interface and the same answers as `limits.quotas.InProcessQuotaStore`, one round trip to
reserve and one to settle (`limits.redis_counters`).

Each limit of each holder is one counter with a fixed window on the Redis clock (windows are
multiples of their length since the epoch, so minutes and days are UTC-aligned):

- requests and tokens per minute: 60 s windows;
- concurrent requests: the request counts 1 until settled (the settle gives it back); a
  600 s window bounds how long a crashed process's requests stay counted;
- tokens per day: 86400 s windows (the UTC day); per month: the calendar month (UTC), one
  counter per month whose window starts at the month's first second and lasts the month, as
  in-process. A budget refuses a request whose reservation does not fit in what is left.

Windows are chosen on the Redis server's clock, or on `now` when a caller passes it (tests,
replays), so both stores give the same answers for the same calls and clock.

Redis unreachable: `redis_counters.reserve` admits uncounted (`LIMITS__ON_REDIS_ERROR=open`)
or raises `LimitsUnavailable` (closed, 503).

A busy key's next reservations are made ahead (`limits.redis_ahead`): `take_ready` hands one
out without a round trip, and `settle` makes more once a request has ended.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any

from limits import redis_counters
from limits.quotas import (
    QuotaSubject,
    Reservation,
    _format_rate_headers,
    limit_reached,
    month_window,
)
from limits.redis_ahead import AheadReservations
from limits.redis_counters import Counter

MINUTE, DAY, MONTH = 60.0, 86400.0, 30 * 86400.0
# How long a request's concurrency unit stays counted if its process dies before settling.
CONCURRENCY_WINDOW = 600.0

# (limit attribute, counter suffix, window, what it counts, how its amount is chosen)
_REQUESTS, _TOKENS, _CONCURRENT, _BUDGET = "requests", "tokens", "concurrent", "budget"
LIMITS = (
    ("requests_per_minute", "rpm", MINUTE, "requests per minute", _REQUESTS),
    ("tokens_per_minute", "tpm", MINUTE, "tokens per minute", _TOKENS),
    ("concurrent_requests", "concurrent", CONCURRENCY_WINDOW, "concurrent requests", _CONCURRENT),
    ("tokens_per_day", "tpd", DAY, "tokens per day", _BUDGET),
    ("tokens_per_month", "tpmonth", MONTH, "tokens per month", _BUDGET),
)


@dataclass(slots=True)
class RedisReservation(Reservation):
    """A reservation that also remembers its Redis counters, for `settle`."""

    counted: Any = None  # the redis_counters.Reservation
    kinds: tuple[str, ...] = ()


@functools.lru_cache(maxsize=4096)
def _described(subject: QuotaSubject) -> tuple[tuple[str, str, int, float, str, str], ...]:
    """The subject's limits that apply: (counter key, holder id, limit, window, what, kind)."""
    rows = []
    for holder_id, limits in zip(subject.holder_ids, subject.holder_limits(), strict=True):
        for attribute, suffix, window, what, kind in LIMITS:
            limit = getattr(limits, attribute)
            if limit is not None:
                rows.append((f"quota:{holder_id}:{suffix}", holder_id, limit, window, what, kind))
    return tuple(rows)


@functools.lru_cache(maxsize=4096)
def _descriptions(subject: QuotaSubject) -> list[tuple]:
    """(holder id, limit, what, kind) per counter, as `_counters` gives them."""
    return [
        (holder_id, limit, what, kind) for _, holder_id, limit, _, what, kind in _described(subject)
    ]


def _counters(
    subject: QuotaSubject, tokens: int, now: float | None = None
) -> tuple[tuple[Counter, ...], list[tuple]]:
    """The counters a request of `tokens` reserves at `now`, and `_descriptions` of them."""
    return _counters_in(subject, tokens, month_window(time.time() if now is None else now))


@functools.lru_cache(maxsize=4096)
def _counters_in(
    subject: QuotaSubject, tokens: int, month: tuple[int, int, int]
) -> tuple[tuple[Counter, ...], list[tuple]]:
    index, start, length = month
    counters: list[Counter] = []
    for key, _, limit, window, _, kind in _described(subject):
        amount = tokens if kind == _TOKENS else max(tokens, 1) if kind == _BUDGET else 1
        if window == MONTH:
            counter = Counter(
                f"{key}:{index}", limit, float(length), amount, buckets=1, offset_ms=start * 1000
            )
        else:
            counter = Counter(key, limit, window, amount, buckets=1)
        counters.append(counter)
    return tuple(counters), _descriptions(subject)


@functools.lru_cache(maxsize=4096)
def _kinds(subject: QuotaSubject) -> tuple[str, ...]:
    return tuple(d[3] for d in _descriptions(subject))


def _rate_of(subject: QuotaSubject):
    """`_rate` for reservations of this subject made ahead."""
    described = _descriptions(subject)
    return lambda counted: _rate(counted, described, time.time())


def _rate(counted, described, now: float):
    """The tightest holder's remaining requests and tokens this minute, as the headers want."""
    requests = tokens = None
    for state, (_, limit, _, kind), counter in zip(
        counted.states, described, counted.counters, strict=True
    ):
        if counter.window != MINUTE:
            continue
        if kind == _REQUESTS and (requests is None or state.remaining < requests[0]):
            requests = (state.remaining, limit)
        elif kind == _TOKENS and (tokens is None or state.remaining < tokens[0]):
            tokens = (state.remaining, limit)
    if requests is None and tokens is None:
        return None
    reset = 60 - int(now) % 60
    return (*(requests or (None, None)), *(tokens or (None, None)), reset)


class RedisQuotaStore:
    """Quotas shared through Redis. See the module docstring."""

    # Reservations go out with the request's model slot (limits.admission).
    shared = True

    def __init__(self) -> None:
        self._ahead = AheadReservations()

    def take_ready(self, subject: QuotaSubject, *, tokens: int) -> Reservation | None:
        """
        A reservation made ahead for this busy key, if one is ready and fits (no round trip);
        None: `reserve` as usual. Either way the request counts in the key's streak.
        """
        if subject.unlimited:
            return None
        tokens = max(0, tokens)
        ahead = self._ahead.take(subject, tokens)
        if ahead is None:
            return None
        now = time.time()
        return RedisReservation(
            subject,
            tokens,
            int(now) // 60,
            int(now) // 86400,
            0,
            ahead.rate,
            counted=ahead.counted,
            kinds=_kinds(subject),
        )

    async def reserve(
        self, subject: QuotaSubject, *, tokens: int, now: float | None = None
    ) -> Reservation:
        given, now = now, time.time() if now is None else now
        minute, day = int(now) // 60, int(now) // 86400
        if subject.unlimited:
            return RedisReservation(subject, tokens, minute, day, 0)
        tokens = max(0, tokens)
        counters, described = _counters(subject, tokens, now)
        # The windows run on the Redis server's clock unless the caller gave one.
        counted = await redis_counters.reserve(
            counters, extra=self._ahead.wanted(subject), now=given
        )
        if not counted.admitted:
            index = counters.index(counted.over)
            holder_id, limit, what, kind = described[index]
            wait = 1 if kind == _CONCURRENT else math.ceil(counted.retry_after or 60)
            refused_rate = _refused_rate(described, index, limit, kind, now)
            raise limit_reached(
                holder_id,
                limit=what.replace(" ", "_"),
                value=limit,
                tokens=tokens if kind in (_TOKENS, _BUDGET) else 0,
                retry_after=wait,
                headers=_format_rate_headers(refused_rate),
            )
        rate = _rate(counted, described, now) if counted.counted and counted.states else None
        if counted.extra:
            self._ahead.keep(subject, counted, tokens, rate)
        return RedisReservation(
            subject,
            tokens,
            minute,
            day,
            0,
            rate,
            counted=counted,
            kinds=_kinds(subject),
        )

    def give_back_ahead(self) -> None:
        """Shutdown: give back this worker's reservations made ahead."""
        self._ahead.give_back_all()

    async def settle(self, reservation: Reservation, *, used_tokens: int | None) -> None:
        """Give back the concurrency unit and count the real tokens instead of the estimate."""
        if reservation.settled:
            return
        reservation.settled = True
        counted = getattr(reservation, "counted", None)
        if counted is None:
            return
        kinds = reservation.kinds  # type: ignore[attr-defined]
        actual = []
        for counter, kind in zip(counted.counters, kinds, strict=True):
            if kind == _CONCURRENT:
                actual.append(0)
            elif kind in (_TOKENS, _BUDGET):
                # Unknown use: the request's own estimate (one made ahead may hold more).
                actual.append(max(0, reservation.tokens if used_tokens is None else used_tokens))
            else:
                actual.append(counter.amount)
        redis_counters.settle_later(counted, actual)
        self._refill(reservation.subject, reservation.tokens)

    def _refill(self, subject: QuotaSubject, tokens: int) -> None:
        """
        Make reservations ahead for a busy key, if it wants more. Done as a request ends, so
        that the round trip (and Redis's work) falls after its answer, not beside its call to
        the model server.
        """
        wanted = self._ahead.wanted(subject)
        if wanted:
            counters = _counters(subject, tokens)[0]
            self._ahead.refill(subject, wanted, counters, tokens, _rate_of(subject))

    async def snapshot(self, subject: QuotaSubject, *, now: float | None = None) -> dict:
        """
        Each holder's limits, current counts and remaining quota (for GET /v1/me): one
        reservation of nothing against every counter, which reads them all in one round trip.
        """
        counters, described = _counters(subject, 0, now)
        # Read with a limit nothing reaches, so the reply is never a refusal.
        probes = [
            Counter(c.key, _UNREACHABLE, c.window, 0, buckets=c.buckets, offset_ms=c.offset_ms)
            for c in counters
        ]
        counted = await redis_counters.reserve(probes, now=now) if probes else None
        states = counted.states if counted is not None and counted.counted else ()
        used = {
            (holder_id, kind_of(counter)): (_UNREACHABLE - state.remaining, state.reset_after)
            for state, (holder_id, *_), counter in zip(states, described, counters, strict=False)
        }
        result = {}
        for holder_id, limits in zip(subject.holder_ids, subject.holder_limits(), strict=True):
            entry = {}
            for attribute, suffix, window, _, _ in LIMITS:
                limit = getattr(limits, attribute)
                count, reset = used.get((holder_id, suffix), (0, window))
                if suffix == "tpmonth" and (holder_id, suffix) not in used:
                    _, start, length = month_window(time.time() if now is None else now)
                    reset = start + length - (time.time() if now is None else now)
                if suffix == "concurrent":
                    reset = 0
                entry[attribute] = {
                    "limit": limit,
                    # None: Redis could not be read (the requests are admitted uncounted).
                    "used": count if states or not probes else None,
                    "remaining": None if limit is None else max(0, limit - count),
                    "resets_in_seconds": math.ceil(reset),
                }
            result[holder_id.split(":", 1)[0]] = entry
        return result


_UNREACHABLE = 2**53  # a limit no counter reaches (Lua numbers are exact up to 2^53)


def kind_of(counter: Counter) -> str:
    """The counter's suffix ("rpm", "tpd", "tpmonth", ...), without a month's index."""
    parts = counter.key.split(":")
    return parts[-2] if parts[-1].isdigit() else parts[-1]


def _refused_rate(described, index: int, limit: int, kind: str, now: float):
    """Headers of a refusal: the counter over its limit has nothing left."""
    reset = 60 - int(now) % 60
    if kind == _REQUESTS:
        return (0, limit, None, None, reset)
    if kind == _TOKENS:
        return (None, None, 0, limit, reset)
    # Another limit refused: report the holder's per-minute limits as unknown-but-present.
    holder_id = described[index][0]
    requests = next((d for d in described if d[0] == holder_id and d[3] == _REQUESTS), None)
    tokens = next((d for d in described if d[0] == holder_id and d[3] == _TOKENS), None)
    if requests is None and tokens is None:
        return None
    return (
        *((0, requests[1]) if requests else (None, None)),
        *((0, tokens[1]) if tokens else (None, None)),
        reset,
    )
