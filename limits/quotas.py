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
unknown). Budgets are checked on admission: a request is refused when what it may use (its
reservation) does not fit in what is left, so a budget is overrun only by what requests use
beyond their reservation.

Windows are fixed and UTC-aligned (the minute, the day, the calendar month), which a Redis
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
    # Derived once (a subject lives in the key cache): the counters' names, and whether any
    # limit applies at all.
    holder_ids: tuple[str, ...] = field(init=False, compare=False, repr=False)
    unlimited: bool = field(init=False, compare=False, repr=False)
    _hash: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        holders: tuple[str, ...] = (f"key:{self.key_id}",)
        if self.team_id is not None:
            holders += (f"team:{self.team_id}",)
        object.__setattr__(self, "holder_ids", holders)
        object.__setattr__(
            self,
            "unlimited",
            self.key_limits.unlimited and (self.team_id is None or self.team_limits.unlimited),
        )
        object.__setattr__(
            self, "_hash", hash((self.key_id, self.key_limits, self.team_id, self.team_limits))
        )

    def __hash__(self) -> int:
        # Computed once: a subject is a dictionary key several times per request.
        return self._hash

    def holder_limits(self) -> tuple[Limits, ...]:
        return (self.key_limits, self.team_limits)[: len(self.holder_ids)]


@dataclass(slots=True)
class Reservation:
    """What `reserve` took; hand it back to `settle` exactly once."""

    subject: QuotaSubject
    tokens: int
    minute: int
    day: int
    month: int
    # (remaining requests, their limit, remaining tokens, their limit, seconds to the reset)
    # of the tightest holder; formatted only when the headers are asked for.
    rate: tuple[int | None, int | None, int | None, int | None, int] | None = None
    settled: bool = False

    @property
    def headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for a successful response (empty when unlimited)."""
        return _format_rate_headers(self.rate)


class QuotaError(Exception):
    """Base of the quota errors."""


# The limits that are budgets (spent until their window ends), as `Limits` field names.
BUDGETS = frozenset({"tokens_per_day", "tokens_per_month"})


class QuotaExceeded(QuotaError):
    """
    A limit is reached: answer 429 with `detail`, and send `headers` (Retry-After and the
    x-ratelimit-* family) with the response. Which limit: `scope` is whose ("key" or "team"),
    `limit` which one (a `Limits` field name, such as "tokens_per_day") and `value` its size;
    `oversized` says the request alone is more than the limit (only a smaller one can pass).
    """

    status_code = 429

    def __init__(
        self,
        detail: str,
        *,
        retry_after: int,
        headers: dict[str, str],
        scope: str = "",
        limit: str = "",
        value: int | None = None,
        oversized: bool = False,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        self.headers = {**headers, "Retry-After": str(retry_after)}
        self.scope = scope
        self.limit = limit
        self.value = value
        self.oversized = oversized

    @property
    def budget(self) -> bool:
        """Whether the limit is a token budget (per day or per month), not a rate."""
        return self.limit in BUDGETS


def limit_reached(
    holder_id: str,
    *,
    limit: str,
    value: int,
    tokens: int,
    retry_after: int,
    headers: dict[str, str],
) -> QuotaExceeded:
    """
    The refusal by the limit `limit` (a `Limits` field name) of `value` of the holder
    `holder_id` ("key:…" or "team:…"), for a request that may use `tokens` (0 for a count of
    requests). Both stores make their refusals here, so their details read alike.
    """
    scope = "team" if holder_id.startswith("team:") else "key"
    holder = "team" if scope == "team" else "API key"
    words = limit.replace("_", " ")
    oversized = tokens > value
    if oversized:
        detail = (
            f"This request may use {tokens} tokens (max_tokens plus the prompt), more than "
            f"the {holder}'s limit of {value} {words}. Lower max_tokens."
        )
    else:
        detail = f"Rate limit reached: the {holder}'s limit of {value} {words}."
    return QuotaExceeded(
        detail,
        retry_after=max(1, retry_after),
        headers=headers,
        scope=scope,
        limit=limit,
        value=value,
        oversized=oversized,
    )


class QuotaStore(Protocol):
    """The interface every implementation (in-process, Redis) provides."""

    # True when a reservation is a round trip to a shared store (sent with the request's
    # model slot, see limits.admission); False when it is answered in-process at once.
    shared: bool

    def take_ready(self, subject: QuotaSubject, *, tokens: int) -> Reservation | None:
        """A reservation made ahead that this request may take now, without waiting."""
        ...

    async def reserve(
        self, subject: QuotaSubject, *, tokens: int, now: float | None = None
    ) -> Reservation: ...

    async def settle(self, reservation: Reservation, *, used_tokens: int | None) -> None: ...

    async def snapshot(self, subject: QuotaSubject, *, now: float | None = None) -> dict: ...


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

    def roll(self, clock: _Clock) -> None:
        if self.minute != clock.minute:
            self.minute, self.requests, self.minute_tokens = clock.minute, 0, 0
        if self.day != clock.day:
            self.day, self.day_tokens = clock.day, 0
        if self.month != clock.month:
            self.month, self.month_tokens = clock.month, 0


@dataclass(frozen=True, slots=True)
class _Clock:
    """The windows at one second (UTC), and the whole seconds until each ends."""

    second: int
    minute: int
    day: int
    month: int
    to_next_minute: int
    to_next_day: int
    to_next_month: int

    @classmethod
    def at(cls, now: float) -> _Clock:
        second = int(now)
        moment = datetime.fromtimestamp(second, UTC)
        year, month = divmod(moment.year * 12 + moment.month, 12)  # the next month
        next_month = datetime(year, month + 1, 1, tzinfo=UTC)
        return cls(
            second=second,
            minute=second // 60,
            day=second // 86400,
            month=moment.year * 12 + moment.month - 1,
            to_next_minute=60 - second % 60,
            to_next_day=86400 - second % 86400,
            to_next_month=int((next_month - moment).total_seconds()),
        )


def month_window(now: float) -> tuple[int, int, int]:
    """The calendar month (UTC) of `now`: its index (year * 12 + month - 1), first second, length."""
    moment = datetime.fromtimestamp(int(now), UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    year, month = divmod(moment.year * 12 + moment.month, 12)  # the next month
    end = datetime(year, month + 1, 1, tzinfo=UTC)
    return (
        moment.year * 12 + moment.month - 1,
        int(start.timestamp()),
        int((end - start).total_seconds()),
    )


class InProcessQuotaStore:
    """Quotas counted in this process (one worker). See the module docstring."""

    shared = False

    def take_ready(self, subject: QuotaSubject, *, tokens: int) -> Reservation | None:
        return None  # `reserve` answers at once: nothing is reserved ahead

    def __init__(self) -> None:
        self._counters: dict[str, _Counters] = {}
        self._lock = threading.Lock()
        self._clock = _Clock.at(0)

    def _clock_at(self, now: float) -> _Clock:
        # Computed once per second: the windows only change on whole seconds.
        clock = self._clock
        if clock.second != int(now):
            clock = self._clock = _Clock.at(now)
        return clock

    def _holders(self, subject: QuotaSubject) -> list[tuple[str, Limits, _Counters]]:
        counters = self._counters
        holders = []
        for holder_id, limits in zip(subject.holder_ids, subject.holder_limits(), strict=True):
            holder = counters.get(holder_id)
            if holder is None:
                holder = counters[holder_id] = _Counters()
            holders.append((holder_id, limits, holder))
        return holders

    async def reserve(
        self, subject: QuotaSubject, *, tokens: int, now: float | None = None
    ) -> Reservation:
        """Check every limit of the key and its team, then count the request in all of them."""
        clock = self._clock_at(time.time() if now is None else now)
        if subject.unlimited:
            return Reservation(subject, tokens, clock.minute, clock.day, clock.month)
        tokens = max(0, tokens)
        with self._lock:
            holders = self._holders(subject)
            for holder_id, limits, counters in holders:
                counters.roll(clock)
                _check(holder_id, limits, counters, tokens, clock)
            for _, _, counters in holders:
                counters.requests += 1
                counters.minute_tokens += tokens
                counters.day_tokens += tokens
                counters.month_tokens += tokens
                counters.concurrent += 1
            rate = _rate(holders, clock)
        return Reservation(subject, tokens, clock.minute, clock.day, clock.month, rate)

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
                if counters.concurrent > 0:
                    counters.concurrent -= 1
                if delta:
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
                counters.roll(clock)
                result[holder_id.split(":", 1)[0]] = _describe(limits, counters, clock)
        return result


def _check(holder_id: str, limits: Limits, counters: _Counters, tokens: int, clock: _Clock) -> None:
    """Raise QuotaExceeded if this request does not fit in one of the holder's limits."""
    limit = limits.requests_per_minute
    if limit is not None and counters.requests + 1 > limit:
        _refuse(
            holder_id, limits, counters, clock, limit, "requests per minute", clock.to_next_minute
        )
    limit = limits.tokens_per_minute
    if limit is not None and counters.minute_tokens + tokens > limit:
        wait = clock.to_next_minute
        _refuse(holder_id, limits, counters, clock, limit, "tokens per minute", wait, tokens)
    limit = limits.concurrent_requests
    if limit is not None and counters.concurrent + 1 > limit:
        # A slot frees when a request ends; a second is a fair guess.
        _refuse(holder_id, limits, counters, clock, limit, "concurrent requests", 1)
    # A budget refuses a request that alone could overrun what is left of it.
    # (Counted as at least one token: a spent budget refuses even an empty request.)
    limit = limits.tokens_per_day
    if limit is not None and counters.day_tokens + max(tokens, 1) > limit:
        wait = clock.to_next_day
        _refuse(holder_id, limits, counters, clock, limit, "tokens per day", wait, tokens)
    limit = limits.tokens_per_month
    if limit is not None and counters.month_tokens + max(tokens, 1) > limit:
        wait = clock.to_next_month
        _refuse(holder_id, limits, counters, clock, limit, "tokens per month", wait, tokens)


def _refuse(
    holder_id: str,
    limits: Limits,
    counters: _Counters,
    clock: _Clock,
    limit: int,
    window: str,
    wait: int,
    tokens: int = 0,
) -> None:
    raise limit_reached(
        holder_id,
        limit=window.replace(" ", "_"),
        value=limit,
        tokens=tokens,
        retry_after=wait,
        headers=_format_rate_headers(_rate([(holder_id, limits, counters)], clock)),
    )


def _rate(holders: list[tuple[str, Limits, _Counters]], clock: _Clock):
    """The tightest holder's remaining requests and tokens this minute (None: no such limit)."""
    requests = tokens = None
    for _, limits, counters in holders:
        limit = limits.requests_per_minute
        if limit is not None and (requests is None or limit - counters.requests < requests[0]):
            requests = (limit - counters.requests, limit)
        limit = limits.tokens_per_minute
        if limit is not None and (tokens is None or limit - counters.minute_tokens < tokens[0]):
            tokens = (limit - counters.minute_tokens, limit)
    if requests is None and tokens is None:
        return None
    return (*(requests or (None, None)), *(tokens or (None, None)), clock.to_next_minute)


def _format_rate_headers(rate) -> dict[str, str]:
    if rate is None:
        return {}
    remaining_requests, request_limit, remaining_tokens, token_limit, reset_seconds = rate
    reset = format_reset(reset_seconds)
    headers = {}
    if request_limit is not None:
        headers["x-ratelimit-limit-requests"] = str(request_limit)
        headers["x-ratelimit-remaining-requests"] = str(max(0, remaining_requests))
        headers["x-ratelimit-reset-requests"] = reset
    if token_limit is not None:
        headers["x-ratelimit-limit-tokens"] = str(token_limit)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, remaining_tokens))
        headers["x-ratelimit-reset-tokens"] = reset
    return headers


def _describe(limits: Limits, counters: _Counters, clock: _Clock) -> dict:
    used_and_reset = {
        "requests_per_minute": (counters.requests, clock.to_next_minute),
        "tokens_per_minute": (counters.minute_tokens, clock.to_next_minute),
        "concurrent_requests": (counters.concurrent, 0),
        "tokens_per_day": (counters.day_tokens, clock.to_next_day),
        "tokens_per_month": (counters.month_tokens, clock.to_next_month),
    }
    described = {}
    for name, (used, reset) in used_and_reset.items():
        limit = getattr(limits, name)
        described[name] = {
            "limit": limit,
            "used": used,
            "remaining": None if limit is None else max(0, limit - used),
            "resets_in_seconds": reset,
        }
    return described


def estimate_request_tokens(*, max_tokens: int, prompt_chars: int, messages: int = 1) -> int:
    """
    What to reserve for a request: its max_tokens plus its prompt at about four characters a
    token (a few more per message for the chat template). Settling corrects it.
    """
    return max_tokens + -(-prompt_chars // 4) + 4 * messages
