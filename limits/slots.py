"""
Concurrency slots: at most N requests to a model at once; the rest wait up to a queue timeout,
and a slot that frees goes to the next waiter by the fair-sharing rules of `limits.flows`
(priority class, then team by weight, then key, then first come, first served).

`LocalSlots` counts in this process, as documented for `MAX_CONCURRENCY` (per worker). The
interface is what the services use, so a shared implementation (`limits.redis_slots`) can
stand in for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from limits.flows import ANONYMOUS, FairQueue, Flow

# How fast the mean time a slot is held follows changes (for Retry-After).
HOLD_SMOOTHING = 0.2
# The longest Retry-After estimated from the line: beyond it the line will have changed anyway.
RETRY_AFTER_MAX = 3600


class SlotTimeout(Exception):
    """
    No slot became free within the queue timeout. `retry_after` estimates, from the line seen
    at the time, the seconds until a slot would have been free (None when there is no estimate).
    """

    def __init__(self, retry_after: int | None = None) -> None:
        super().__init__("no slot became free within the queue timeout")
        self.retry_after = retry_after


def retry_estimate(*, waiting: int, capacity: int, mean_hold: float | None) -> int | None:
    """
    Seconds until the line ahead (`waiting` requests) has drained through `capacity` slots,
    from 1 to RETRY_AFTER_MAX.
    """
    if mean_hold is None:
        return None
    return min(RETRY_AFTER_MAX, max(1, math.ceil((waiting + 1) / capacity * mean_hold)))


class HoldTimes:
    """A smoothed mean of how long a slot is held, for the Retry-After of a queue timeout."""

    def __init__(self) -> None:
        self.mean: float | None = None

    def add(self, seconds: float) -> None:
        self.mean = (
            seconds if self.mean is None else self.mean + HOLD_SMOOTHING * (seconds - self.mean)
        )


@dataclass
class _LoopSlots:
    held: int = 0
    line: FairQueue[asyncio.Future[None]] = field(default_factory=FairQueue)


class LocalSlots:
    """
    `capacity` slots shared by the requests of this process. A slot that frees is handed
    straight to the waiter chosen by the fair queue. The state is bound to an event loop
    (tests run several loops in one process), so there is one per loop.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hold_times = HoldTimes()
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSlots] = (
            weakref.WeakKeyDictionary()
        )

    def _state(self) -> _LoopSlots:
        loop = asyncio.get_running_loop()
        state = self._per_loop.get(loop)
        if state is None:
            state = self._per_loop[loop] = _LoopSlots()
        return state

    @property
    def in_use(self) -> int:
        """Slots held right now on this event loop."""
        try:
            return self._state().held
        except RuntimeError:  # no running loop
            return 0

    @contextlib.asynccontextmanager
    async def hold(
        self,
        *,
        queue_timeout: float,
        flow: Flow = ANONYMOUS,
    ) -> AsyncIterator[None]:
        """
        Hold one slot for the block, waiting at most `queue_timeout` seconds for it, in the
        line of `flow`.
        """
        state = self._state()
        if state.held < self.capacity and not state.line:
            state.held += 1  # a free slot and nobody waiting: no timer needed
        elif queue_timeout <= 0:
            raise SlotTimeout(self._retry_after(state))
        else:
            await self._wait(state, flow, queue_timeout)
        started = time.monotonic()
        try:
            yield
        finally:
            self.hold_times.add(time.monotonic() - started)
            self._release(state)

    async def _wait(self, state: _LoopSlots, flow: Flow, queue_timeout: float) -> None:
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = state.line.push(flow, granted)
        try:
            async with asyncio.timeout(queue_timeout):
                await granted
        except BaseException as exc:
            if granted.done() and not granted.cancelled():
                self._release(state)  # granted as it gave up: pass the slot on
            else:
                state.line.remove(handle)
            if isinstance(exc, TimeoutError):
                raise SlotTimeout(self._retry_after(state)) from None
            raise

    def _retry_after(self, state: _LoopSlots) -> int | None:
        return retry_estimate(
            waiting=len(state.line), capacity=self.capacity, mean_hold=self.hold_times.mean
        )

    def _release(self, state: _LoopSlots) -> None:
        state.held -= 1
        while state.held < self.capacity:
            waiter = state.line.pop()
            if waiter is None:
                return
            if not waiter.done():  # a waiter cancelled meanwhile is skipped
                state.held += 1
                waiter.set_result(None)
