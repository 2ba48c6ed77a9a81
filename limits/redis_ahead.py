"""
Quota reservations made ahead, so that a busy key's requests need no Redis round trip first.

With shared limits every request's quota is reserved in Redis before the model server is
called: one round trip on the request's path. For a key that sends requests one after another,
the worker reserves the next requests' quotas ahead, in the background, and a request that
finds one ready takes it at once. Every admitted request is still counted in Redis before it
is admitted, so no limit is ever passed; what changes is only when the counting happens.

A reservation made ahead is an ordinary reservation of the same counters, made by the same
atomic script (`limits.redis_counters.reserve`, its `extra` copies), with these rules:

- Only while every counter of the key (and its team) keeps at least half its limit free after
  it: near a limit, every request waits for its own reservation, as without this module. So
  reservations made ahead never refuse anyone: a counter they hold is at most half used.
- Only for a key that has sent `AFTER` requests in a row to this worker, each within `GAP` of
  the previous one: single requests never leave reservations behind.
- At most `DEPTH` per key and worker, made again in one round trip when no more than `LOW`
  are left, each good for requests whose token estimate is at most the one it was made with.
- Not used within `MARGIN` of the end of its shortest window (the UTC minute), since it counts
  in the window it was made in; given back (its amounts subtracted again) when unused for
  `IDLE`, at shutdown, or when its window ends.
- Dropped when Redis fails, so that `LIMITS__ON_REDIS_ERROR=closed` refuses at once.

The price: while a busy key is far from its limits, its counters (and GET /v1/me) show up to
`DEPTH` requests per worker more than it has made, for at most `IDLE`. A worker killed with
reservations ready leaves them counted until their windows end, like a request it was
answering.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from limits import redis_client, redis_counters
from limits.per_loop import PerLoop, running_loop

DEPTH = 8  # reservations kept ready per key and worker, at most
LOW = 3  # ... made again (up to DEPTH, in one round trip) when no more than this are left
AFTER = 8  # ... once the key has sent this many requests in a row,
GAP = 0.1  # ... each within this many seconds of the previous one
IDLE = 1.0  # an unused reservation made ahead is given back after this many seconds
MARGIN = 0.25  # seconds before its window ends from which one is no longer used


@dataclass(slots=True)
class Ahead:
    """A reservation made ahead: the counters it holds, and until when it may be used."""

    counted: redis_counters.Reservation
    tokens: int
    rate: Any  # the x-ratelimit-* headers' values for the request that takes it
    usable_until: float  # loop time
    idle_until: float  # loop time


@dataclass(slots=True)
class _Key:
    """One quota subject's requests on one worker."""

    ready: list[Ahead] = field(default_factory=list)
    refilling: int = 0
    streak: int = 0
    last_at: float = float("-inf")


@dataclass
class _Loop:
    keys: dict[Any, _Key] = field(default_factory=dict)
    sweeper: asyncio.TimerHandle | None = None


class AheadReservations:
    """The reservations made ahead on each event loop, by quota subject."""

    def __init__(self) -> None:
        self._loops: PerLoop[_Loop] = PerLoop(_Loop)

    def take(self, subject: Any, tokens: int) -> Ahead | None:
        """
        Count the request in its key's streak, and hand it a ready reservation if one fits
        (None otherwise: reserve as usual, with `wanted` extra copies).
        """
        loop = running_loop()
        now = loop.time()
        state = self._loops.get()
        key = state.keys.get(subject)
        if key is None:
            key = state.keys[subject] = _Key()
            self._sweep_later(loop, state)
        key.streak = key.streak + 1 if now - key.last_at <= GAP else 1
        key.last_at = now
        if not key.ready:
            return None
        if not redis_client.healthy():
            self._give_back_all(key)
            return None
        for index, ahead in enumerate(key.ready):
            if ahead.tokens >= tokens and now < ahead.usable_until:
                del key.ready[index]
                return ahead
        return None

    def wanted(self, subject: Any) -> int:
        """How many reservations to make ahead for this key now (0 unless it is busy)."""
        state = self._loops.peek()
        key = state.keys.get(subject) if state else None
        if key is None or key.streak < AFTER or not redis_client.healthy():
            return 0
        have = len(key.ready) + key.refilling
        return DEPTH - have if have <= LOW else 0

    def keep(
        self, subject: Any, counted: redis_counters.Reservation, tokens: int, rate: Any
    ) -> None:
        """
        Keep the `counted.extra` copies that `counted` reserved besides its own (`rate`: what
        their responses' x-ratelimit-* headers say).
        """
        loop = running_loop()
        state = self._loops.get()
        key = state.keys.get(subject)
        if key is None:
            key = state.keys[subject] = _Key()
            self._sweep_later(loop, state)
        now = loop.time()
        # The window that ends first bounds them all (a reservation counts where it was made).
        ends = min((s.reset_after for s in counted.states), default=0.0)
        usable_until = now + ends - MARGIN
        single = dataclasses.replace(counted, extra=0)
        for _ in range(counted.extra):
            key.ready.append(Ahead(single, tokens, rate, usable_until, now + IDLE))

    def refill(
        self,
        subject: Any,
        wanted: int,
        counters: Sequence[redis_counters.Counter],
        tokens: int,
        rate: Callable[[redis_counters.Reservation], Any],
    ) -> None:
        """Make `wanted` more reservations ahead in the background (nothing waits for them)."""
        key = self._loops.get().keys.get(subject)
        if key is None:
            return
        key.refilling += wanted

        def reserved(counted: redis_counters.Reservation | None) -> None:
            key.refilling -= wanted
            if counted is not None and counted.extra:
                self.keep(subject, counted, tokens, rate(counted))

        redis_counters.reserve_copies_later(counters, wanted, reserved)

    def give_back_all(self) -> None:
        """Give back every reservation made ahead on this loop (shutdown, Redis failures)."""
        state = self._loops.peek()
        if state is None:
            return
        for key in state.keys.values():
            self._give_back_all(key)

    # --- internals --------------------------------------------------------------------------

    @staticmethod
    def _give_back(ahead: Ahead) -> None:
        redis_counters.settle_later(ahead.counted, [0] * len(ahead.counted.counters))

    def _give_back_all(self, key: _Key) -> None:
        ready, key.ready = key.ready, []
        for ahead in ready:
            self._give_back(ahead)

    def _sweep_later(self, loop: asyncio.AbstractEventLoop, state: _Loop) -> None:
        if state.sweeper is None:
            state.sweeper = loop.call_later(IDLE / 2, self._sweep, loop, state)

    def _sweep(self, loop: asyncio.AbstractEventLoop, state: _Loop) -> None:
        """Give back what is idle or out of its window; forget keys gone quiet."""
        state.sweeper = None
        now = loop.time()
        for subject, key in list(state.keys.items()):
            keep = []
            for ahead in key.ready:
                if now < ahead.idle_until and now < ahead.usable_until:
                    keep.append(ahead)
                else:
                    self._give_back(ahead)
            key.ready = keep
            if not keep and not key.refilling and now - key.last_at > IDLE:
                del state.keys[subject]
        if state.keys:
            self._sweep_later(loop, state)
