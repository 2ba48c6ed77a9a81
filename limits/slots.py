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

from django.conf import settings

from limits.flows import ANONYMOUS, BATCH, FairQueue, Flow

# How fast the mean time a slot is held follows changes (for Retry-After).
HOLD_SMOOTHING = 0.2
# The longest Retry-After estimated from the line: beyond it the line will have changed anyway.
RETRY_AFTER_MAX = 3600
# Slots batch work leaves free while interactive work is present, and for how long after the
# last interactive request ended it is still present (LIMITS__BATCH_HEADROOM[_SECONDS]).
BATCH_HEADROOM = 1
BATCH_HEADROOM_SECONDS = 2.0
# The message a batch line's task is cancelled with when interactive work takes its slot
# (LIMITS__BATCH_PREEMPT); the batch runner runs such a line again.
PREEMPTED = "llmapi: preempted by interactive work"


def headroom_settings() -> tuple[int, float]:
    """(batch headroom in slots, its window in seconds) as configured in SHARED_LIMITS."""
    shared = getattr(settings, "SHARED_LIMITS", {})
    return (
        int(shared.get("batch_headroom", BATCH_HEADROOM)),
        float(shared.get("batch_headroom_seconds", BATCH_HEADROOM_SECONDS)),
    )


def preempt_setting() -> bool:
    """Whether interactive work preempts batch lines in this process (LIMITS__BATCH_PREEMPT)."""
    return bool(getattr(settings, "SHARED_LIMITS", {}).get("batch_preempt", True))


def is_preemption(exc: BaseException) -> bool:
    """Whether `exc` is the cancellation of a batch line whose slot interactive work took."""
    return isinstance(exc, asyncio.CancelledError) and PREEMPTED in exc.args


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


@dataclass(eq=False)
class _Holder:
    """A slot held: since when, and for batch work the task to cancel to take the slot back."""

    started: float
    task: asyncio.Task | None = None  # batch work only
    preempted: bool = False


@dataclass
class _LoopSlots:
    held: int = 0
    line: FairQueue[tuple[asyncio.Future[bool], bool]] = field(default_factory=FairQueue)
    batch_held: int = 0  # of `held`, by batch work
    interactive_ended: float = float("-inf")  # monotonic time the last interactive one ended
    recheck: asyncio.TimerHandle | None = None  # grants held-back batch work when the window ends
    # Every slot held, oldest first (a dict for its order and its O(1) removal).
    holders: dict[_Holder, None] = field(default_factory=dict)
    preempt_check: asyncio.TimerHandle | None = None  # weighs preemption again (see `_preempt`)


class LocalSlots:
    """
    `capacity` slots shared by the requests of this process. A slot that frees is handed
    straight to the waiter chosen by the fair queue. The state is bound to an event loop
    (tests run several loops in one process), so there is one per loop.

    Batch work and interactive work share the slots in one of two ways:

    * **preemption** (`preempt`, the default): batch lines take every slot nobody else
      wants, and an interactive request that finds every slot held while batch lines
      (`Flow.preemptible`) hold some cancels the youngest of them (the least work lost), which gives its slot back at
      once, unless a slot is expected to free sooner than that line has run (`_preempt`);
      the batch runner runs a cancelled line again later. The headroom still holds back batch
      work that cannot be cut, counting the slots of lines that can as free.
    * **headroom**: while interactive work is present, batch work leaves `headroom` slots
      free (see `_holds_back`), so interactive requests rarely wait, and no work is lost.
    """

    def __init__(
        self,
        capacity: int,
        *,
        headroom: int | None = None,
        headroom_seconds: float | None = None,
        preempt: bool | None = None,
    ) -> None:
        self.capacity = capacity
        self.preempt = preempt_setting() if preempt is None else preempt
        configured, window = headroom_settings()
        headroom = configured if headroom is None else headroom
        # Never on a model with a single slot (or as few slots as the headroom).
        self.headroom = headroom if 0 < headroom < capacity else 0
        self.headroom_seconds = window if headroom_seconds is None else headroom_seconds
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
        batch = flow.priority == BATCH
        if (
            state.held < self.capacity
            and not state.line
            and not (batch and self._holds_back(state))
        ):
            state.held += 1  # a free slot and nobody waiting: no timer needed
            if batch:
                state.batch_held += 1
            its_turn = False
        else:
            its_turn = await self._wait(state, flow, queue_timeout, batch)
        # Only work that may be cut is ever cut: batch lines, not a client's batch-class request,
        # nor a line granted its turn while interactive work waited (the anti-starvation rule:
        # cut at once, batch work would never get one).
        cut = batch and flow.preemptible and not its_turn
        holder = _Holder(time.monotonic(), asyncio.current_task() if cut else None)
        state.holders[holder] = None
        try:
            yield
        finally:
            ended = time.monotonic()
            if not holder.preempted:  # a cut hold says nothing of how long calls take
                self.hold_times.add(ended - holder.started)
            del state.holders[holder]
            if batch:
                state.batch_held -= 1
            else:
                state.interactive_ended = ended
            self._release(state)

    def _holds_back(self, state: _LoopSlots) -> bool:
        """
        Whether a batch grant now would break the headroom interactive work is owed. With
        preemption, a slot held by a batch line that can be cut counts as free for it: so
        batch lines fill the slots interactive work leaves (but for the last free one while
        every other is held by work that cannot be cut).
        """
        if not self.headroom:
            return False
        free_after = self.capacity - state.held - 1
        if free_after < self.headroom and self.preempt and state.batch_held:
            free_after += sum(1 for h in state.holders if h.task is not None and not h.preempted)
        if free_after >= self.headroom:
            return False
        return (
            state.held > state.batch_held
            or state.line.interactive_waiting > 0
            or time.monotonic() < state.interactive_ended + self.headroom_seconds
        )

    async def _wait(self, state: _LoopSlots, flow: Flow, queue_timeout: float, batch: bool) -> bool:
        """
        Wait for a slot in the line. True when batch work was granted it while interactive work
        waited (its anti-starvation turn).
        """
        granted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        handle = state.line.push(flow, (granted, batch))
        self._fill(state)  # a slot held back from batch work goes to interactive work at once
        if granted.done():
            return granted.result()
        if not batch and queue_timeout > 0:
            self._preempt(state)
        if queue_timeout <= 0:
            state.line.remove(handle)
            raise SlotTimeout(self._retry_after(state))
        try:
            async with asyncio.timeout(queue_timeout):
                return await granted
        except BaseException as exc:
            if granted.done() and not granted.cancelled():
                if batch:  # granted as it gave up: pass the slot on
                    state.batch_held -= 1
                self._release(state)
            else:
                state.line.remove(handle)
            if isinstance(exc, TimeoutError):
                raise SlotTimeout(self._retry_after(state)) from None
            raise

    def _preempt(self, state: _LoopSlots) -> None:
        """
        For each interactive request waiting (beyond the batch lines already cancelled for
        them), cancel the youngest batch line holding a slot: its slot comes back as it
        unwinds, and the fair queue hands it to the interactive request. Whichever loses less:
        if some slot is expected to free sooner than that line has been running (from the mean
        hold time), the request waits for it instead of throwing that work away, and the
        choice is weighed again when that time has passed.
        """
        if not self.preempt or not state.batch_held:  # no batch work holds a slot to cut
            return
        if state.preempt_check is not None:
            state.preempt_check.cancel()
            state.preempt_check = None
        owed = state.line.interactive_waiting - sum(h.preempted for h in state.holders)
        now, mean = time.monotonic(), self.hold_times.mean
        for holder in reversed(state.holders):
            if owed <= 0:
                return
            if holder.task is None or holder.preempted or holder.task.done():
                continue
            soonest = self._soonest_end(state, now, mean)
            if soonest is not None and soonest < now - holder.started:
                self._weigh_again(state, soonest)
                return
            holder.preempted = True
            holder.task.cancel(PREEMPTED)
            owed -= 1

    @staticmethod
    def _soonest_end(state: _LoopSlots, now: float, mean: float | None) -> float | None:
        """
        Seconds until the first slot is expected to free, or None for no time soon: a holder
        is expected to end at the mean hold time, and one that has run past it is no longer
        expected to (so a waiting request never waits much longer than a mean hold).
        """
        if mean is None:
            return None
        left = [mean - (now - h.started) for h in state.holders if not h.preempted]
        return min((seconds for seconds in left if seconds > 0), default=None)

    def _weigh_again(self, state: _LoopSlots, seconds: float) -> None:
        def check() -> None:
            state.preempt_check = None
            if state.line.interactive_waiting:
                self._preempt(state)

        state.preempt_check = asyncio.get_running_loop().call_later(max(seconds, 0.001), check)

    def _retry_after(self, state: _LoopSlots) -> int | None:
        return retry_estimate(
            waiting=len(state.line), capacity=self.capacity, mean_hold=self.hold_times.mean
        )

    def _release(self, state: _LoopSlots) -> None:
        state.held -= 1
        self._fill(state)
        if state.line.interactive_waiting:  # the slot went to batch work's turn: cut another
            self._preempt(state)

    def _fill(self, state: _LoopSlots) -> None:
        """Hand the free slots to the waiters the fair queue chooses (within the headroom)."""
        while state.held < self.capacity and state.line:
            waiter = state.line.pop(hold_batch=self._holds_back(state))
            if waiter is None:
                break
            future, batch = waiter
            if not future.done():  # a waiter cancelled meanwhile is skipped
                state.held += 1
                if batch:
                    state.batch_held += 1
                future.set_result(batch and state.line.interactive_waiting > 0)
        if state.held < self.capacity and state.line and state.recheck is None:
            self._recheck_later(state)

    def _recheck_later(self, state: _LoopSlots) -> None:
        """
        Batch work waits while a slot is free (the headroom): if only the window keeps it
        waiting, grant it when the window ends, without waiting for another event.
        """
        if state.held > state.batch_held or state.line.interactive_waiting:
            return  # that interactive work's end calls `_fill`
        remaining = state.interactive_ended + self.headroom_seconds - time.monotonic()

        def recheck() -> None:
            state.recheck = None
            self._fill(state)

        state.recheck = asyncio.get_running_loop().call_later(max(remaining, 0.001), recheck)
