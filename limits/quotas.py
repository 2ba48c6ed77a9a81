"""
Per-key and per-team quotas: requests and tokens per minute, concurrent requests, and token
budgets per day and per month.

A request's life is two calls on a `QuotaStore`:

    reservation = await store.reserve(subject, tokens=max_tokens + prompt_estimate)
    ...                      # the model answers (or streams)
    await store.settle(reservation, used_tokens=usage.total_tokens)

`reserve` checks every counter of the key and of its team and, only if all pass, counts the
request in all of them, as one atomic step: two concurrent requests can never both take the
last unit. Over any limit it raises `QuotaExceeded` (429) carrying `Retry-After` and OpenAI's
`x-ratelimit-*` headers. `settle` is the second atomic step: it frees the concurrency slot and
replaces the reserved tokens with the real count (or keeps the reservation when the count is
unknown). Budgets are checked on admission: a request in flight when a budget runs out
finishes; the next one is refused.

Windows are fixed and UTC-aligned (the minute, the day, the month), which a Redis
implementation expresses as one key per counter and window with an expiry, and each of the
two steps as one Lua script over all of a request's keys. `InProcessQuotaStore` is the
implementation for one process: its counters live in a dict, guarded by a lock (uncontended
on an event loop, it costs a fraction of a microsecond).

Exceptions:

    QuotaError
      └── QuotaExceeded     a limit is reached (HTTP 429)
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Limits:
    """One holder's limits; None means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None

    @property
    def unlimited(self) -> bool:
        return (
            self.requests_per_minute is None
            and self.tokens_per_minute is None
            and self.concurrent_requests is None
            and self.tokens_per_day is None
            and self.tokens_per_month is None
        )


NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class QuotaSubject:
    """Who a request counts against: its key and, when it has one, the key's team."""

    key_id: str
    key_limits: Limits = NO_LIMITS
    team_id: str | None = None
    team_limits: Limits = NO_LIMITS

    @property
    def unlimited(self) -> bool:
        return self.key_limits.unlimited and (self.team_id is None or self.team_limits.unlimited)


@dataclass(slots=True)
class Reservation:
    """What `reserve` took; hand it back to `settle` exactly once."""

    subject: QuotaSubject
    tokens: int
    minute: int
    day: int
    month: int
    # Response headers for a successful request (x-ratelimit-*), from the tightest holder.
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


class QuotaError(Exception):
    """Base of the quota errors."""


class QuotaExceeded(QuotaError):
    """
    A limit is reached: answer 429 with `detail`, and send `headers` (Retry-After and the
    x-ratelimit-* family) with the response.
    """

    status_code = 429

    def __init__(self, detail: str, *, retry_after: int, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        self.headers = {**headers, "Retry-After": str(retry_after)}


class QuotaStore(Protocol):
    """The interface every implementation (in-process, Redis) provides."""

    async def reserve(
        self, subject: QuotaSubject, *, tokens: int, now: float | None = None
    ) -> Reservation: ...

    async def settle(self, reservation: Reservation, *, used_tokens: int | None) -> None: ...

    async def snapshot(self, subject: QuotaSubject, *, now: float | None = None) -> dict: ...


def _month_index(moment: datetime) -> int:
    return moment.year * 12 + moment.month - 1


def _seconds_to_next_month(moment: datetime) -> float:
    year, month = divmod(_month_index(moment) + 1, 12)
    return (datetime(year, month + 1, 1, tzinfo=UTC) - moment).total_seconds()


def format_reset(seconds: float) -> str:
    """OpenAI's reset format: "1s", "6m0s", "1h2m3s"."""
    seconds = max(0, math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(slots=True)
class _Counters:
    """One holder's counters; a window's counts reset when the window changes."""

    minute: int = -1
    requests: int = 0
    minute_tokens: int = 0
    day: int = -1
    day_tokens: int = 0
    month: int = -1
    month_tokens: int = 0
    concurrent: int = 0

    def roll(self, minute: int, day: int, month: int) -> None:
        if self.minute != minute:
            self.minute, self.requests, self.minute_tokens = minute, 0, 0
        if self.day != day:
            self.day, self.day_tokens = day, 0
        if self.month != month:
            self.month, self.month_tokens = month, 0


@dataclass(frozen=True, slots=True)
class _Clock:
    now: float
    minute: int
    day: int
    month: int
    to_next_minute: float
    to_next_day: float
    to_next_month: float

    @classmethod
    def at(cls, now: float) -> _Clock:
        moment = datetime.fromtimestamp(now, UTC)
        return cls(
            now=now,
            minute=int(now // 60),
            day=int(now // 86400),
            month=_month_index(moment),
            to_next_minute=60 - now % 60,
            to_next_day=86400 - now % 86400,
            to_next_month=_seconds_to_next_month(moment),
        )


class InProcessQuotaStore:
    """Quotas counted in this process (one worker). See the module docstring."""

    def __init__(self) -> None:
        self._counters: dict[str, _Counters] = {}
        self._lock = threading.Lock()

    def _holders(self, subject: QuotaSubject) -> list[tuple[str, Limits, _Counters]]:
        pairs = [(f"key:{subject.key_id}", subject.key_limits)]
        if subject.team_id is not None:
            pairs.append((f"team:{subject.team_id}", subject.team_limits))
        holders = []
        for holder_id, limits in pairs:
            counters = self._counters.get(holder_id)
            if counters is None:
                counters = self._counters[holder_id] = _Counters()
            holders.append((holder_id, limits, counters))
        return holders

    async def reserve(
        self, subject: QuotaSubject, *, tokens: int, now: float | None = None
    ) -> Reservation:
        """Check every limit of the key and its team, then count the request in all of them."""
        now = time.time() if now is None else now
        if subject.unlimited:
            minute = int(now // 60)
            return Reservation(subject, tokens, minute, -1, -1)
        clock = _Clock.at(now)
        tokens = max(0, tokens)
        with self._lock:
            holders = self._holders(subject)
            for holder_id, limits, counters in holders:
                counters.roll(clock.minute, clock.day, clock.month)
                _check(holder_id, limits, counters, tokens, clock)
            for _, _, counters in holders:
                counters.requests += 1
                counters.minute_tokens += tokens
                counters.day_tokens += tokens
                counters.month_tokens += tokens
                counters.concurrent += 1
            headers = _rate_headers(holders, clock)
        return Reservation(subject, tokens, clock.minute, clock.day, clock.month, headers)

    async def settle(self, reservation: Reservation, *, used_tokens: int | None) -> None:
        """
        Free the request's concurrency slot and count its real tokens instead of the reserved
        ones (None: the count is unknown, keep the reservation). Settling twice is a no-op.
        """
        if reservation.settled:
            return
        reservation.settled = True
        if reservation.subject.unlimited:
            return
        delta = 0 if used_tokens is None else max(0, used_tokens) - reservation.tokens
        with self._lock:
            for _, _, counters in self._holders(reservation.subject):
                counters.concurrent = max(0, counters.concurrent - 1)
                if counters.minute == reservation.minute:
                    counters.minute_tokens = max(0, counters.minute_tokens + delta)
                if counters.day == reservation.day:
                    counters.day_tokens = max(0, counters.day_tokens + delta)
                if counters.month == reservation.month:
                    counters.month_tokens = max(0, counters.month_tokens + delta)

    async def snapshot(self, subject: QuotaSubject, *, now: float | None = None) -> dict:
        """Each holder's limits, current counts and remaining quota (for GET /v1/me)."""
        clock = _Clock.at(time.time() if now is None else now)
        result = {}
        with self._lock:
            for holder_id, limits, counters in self._holders(subject):
                counters.roll(clock.minute, clock.day, clock.month)
                result[holder_id.split(":", 1)[0]] = _describe(limits, counters, clock)
        return result


# (limit attribute, counter attribute, window name, seconds-to-reset attribute)
_CHECKS = (
    ("requests_per_minute", "requests", "requests per minute", "to_next_minute"),
    ("tokens_per_minute", "minute_tokens", "tokens per minute", "to_next_minute"),
    ("concurrent_requests", "concurrent", "concurrent requests", ""),
    ("tokens_per_day", "day_tokens", "tokens per day", "to_next_day"),
    ("tokens_per_month", "month_tokens", "tokens per month", "to_next_month"),
)


def _check(holder_id: str, limits: Limits, counters: _Counters, tokens: int, clock: _Clock) -> None:
    holder = "team" if holder_id.startswith("team:") else "API key"
    checks = (
        (limits.requests_per_minute, counters.requests + 1, 0),
        (limits.tokens_per_minute, counters.minute_tokens + tokens, 1),
        (limits.concurrent_requests, counters.concurrent + 1, 2),
        # Budgets refuse once spent; a request admitted before keeps its reservation.
        (limits.tokens_per_day, counters.day_tokens + 1, 3),
        (limits.tokens_per_month, counters.month_tokens + 1, 4),
    )
    for limit, wanted, index in checks:
        if limit is None or wanted <= limit:
            continue
        _, _, window, reset_attr = _CHECKS[index]
        # A concurrency slot frees when a request ends; a second is a fair guess.
        wait = getattr(clock, reset_attr) if reset_attr else 1.0
        if index == 1 and tokens > limit:
            detail = (
                f"This request may use {tokens} tokens (max_tokens plus the prompt), more than "
                f"the {holder}'s limit of {limit} tokens per minute. Lower max_tokens."
            )
        else:
            detail = f"Rate limit reached: the {holder}'s limit of {limit} {window}."
        raise QuotaExceeded(
            detail,
            retry_after=max(1, math.ceil(wait)),
            headers=_rate_headers([(holder_id, limits, counters)], clock),
        )


def _rate_headers(holders: list[tuple[str, Limits, _Counters]], clock: _Clock) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers, from the holder with the least remaining."""
    headers: dict[str, str] = {}
    requests = [
        (limits.requests_per_minute - counters.requests, limits.requests_per_minute)
        for _, limits, counters in holders
        if limits.requests_per_minute is not None
    ]
    tokens = [
        (limits.tokens_per_minute - counters.minute_tokens, limits.tokens_per_minute)
        for _, limits, counters in holders
        if limits.tokens_per_minute is not None
    ]
    reset = format_reset(clock.to_next_minute)
    if requests:
        remaining, limit = min(requests)
        headers["x-ratelimit-limit-requests"] = str(limit)
        headers["x-ratelimit-remaining-requests"] = str(max(0, remaining))
        headers["x-ratelimit-reset-requests"] = reset
    if tokens:
        remaining, limit = min(tokens)
        headers["x-ratelimit-limit-tokens"] = str(limit)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, remaining))
        headers["x-ratelimit-reset-tokens"] = reset
    return headers


def _describe(limits: Limits, counters: _Counters, clock: _Clock) -> dict:
    used = {
        "requests_per_minute": counters.requests,
        "tokens_per_minute": counters.minute_tokens,
        "concurrent_requests": counters.concurrent,
        "tokens_per_day": counters.day_tokens,
        "tokens_per_month": counters.month_tokens,
    }
    resets = {
        "requests_per_minute": clock.to_next_minute,
        "tokens_per_minute": clock.to_next_minute,
        "concurrent_requests": 0.0,
        "tokens_per_day": clock.to_next_day,
        "tokens_per_month": clock.to_next_month,
    }
    described = {}
    for name, count in used.items():
        limit = getattr(limits, name)
        described[name] = {
            "limit": limit,
            "used": count,
            "remaining": None if limit is None else max(0, limit - count),
            "resets_in_seconds": math.ceil(resets[name]),
        }
    return described


_store: QuotaStore | None = None


def get_quota_store() -> QuotaStore:
    """The process's store (in-process today; the Redis one will be chosen here)."""
    global _store
    if _store is None:
        _store = InProcessQuotaStore()
    return _store
