"""
The contract of model slots, for both implementations (in process and on Redis): fair order
under contention, never a free slot while someone waits (but the batch headroom kept for
interactive work), timeouts with a Retry-After from the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest

from limits import redis_slots
from limits import slots as slots_module
from limits.flows import BATCH, FairQueue, Flow
from limits.redis_slots import RedisSlots
from limits.slots import RETRY_AFTER_MAX, LocalSlots, SlotTimeout, retry_estimate
from tests.limits.conftest import FAKE_NOW, MINUTE_START, REDIS_NOW, TRANSPORTS, RedisClock
from tests.waiting import FakeClock, eventually, eventually_equal

_names = itertools.count()


@pytest.fixture(params=["local", *TRANSPORTS])
def make_slots(request):
    if request.param in TRANSPORTS:
        request.getfixturevalue(TRANSPORTS[request.param])
        shared = request.getfixturevalue("settings").SHARED_LIMITS
        # Counted or refused, never admitted uncounted, and patient with a busy test machine.
        request.getfixturevalue("settings").SHARED_LIMITS = {
            **shared,
            "timeout": 2,
            "connect_timeout": 2,
            "on_redis_error": "closed",
        }
        return lambda capacity: RedisSlots(f"contract-{next(_names)}", capacity)
    return LocalSlots


async def waiting(slots) -> int:
    if isinstance(slots, RedisSlots):
        return (await slots.shared_counts())[1]
    return len(slots._state().line)


async def until_waiting(slots, count: int) -> None:
    for _ in range(2000):
        if await waiting(slots) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{count} waiters never joined the line")


async def admission_order(slots, arrivals: list[tuple[str, Flow]]) -> list[str]:
    """
    With every slot held, let `arrivals` join the line one after the other, then free the
    slots: the order in which they were admitted.
    """
    admitted: list[str] = []
    blockers = contextlib.AsyncExitStack()
    for _ in range(slots.capacity):
        await blockers.enter_async_context(slots.hold(queue_timeout=5))

    async def one(name: str, flow: Flow) -> None:
        async with slots.hold(queue_timeout=60, flow=flow):
            admitted.append(name)
            await asyncio.sleep(0.001)

    tasks = []
    for count, (name, flow) in enumerate(arrivals, start=1):
        tasks.append(asyncio.create_task(one(name, flow)))
        await until_waiting(slots, count)
    await blockers.aclose()
    await asyncio.gather(*tasks)
    return admitted


def model_order(arrivals: list[tuple[str, Flow]]) -> list[str]:
    line: FairQueue[str] = FairQueue()
    for name, flow in arrivals:
        line.push(flow, name)
    return [line.pop() for _ in arrivals]  # type: ignore[misc]


async def test_a_lone_question_passes_a_flood_of_another_team(make_slots):
    slots = make_slots(1)
    arrivals = [(f"a{n}", Flow(team="a", key="1")) for n in range(6)]
    arrivals.append(("b", Flow(team="b", key="2")))
    order = await admission_order(slots, arrivals)
    assert order == ["a0", "b", "a1", "a2", "a3", "a4", "a5"]


async def test_weights_and_keys_order_the_line_as_the_rules_say(make_slots):
    slots = make_slots(1)
    heavy, light = Flow(team="heavy", key="h", weight=3), Flow(team="light", key="l")
    other_key = Flow(team="heavy", key="h2", weight=3)
    arrivals = [(f"heavy{n}", heavy) for n in range(6)]
    arrivals += [(f"light{n}", light) for n in range(4)]
    arrivals += [("heavy-other-key", other_key)]
    order = await admission_order(slots, arrivals)
    assert order == model_order(arrivals)
    # The heavy team's second key gets the team's next turn after it arrives.
    assert order.index("heavy-other-key") < order.index("heavy4")


async def test_batch_goes_after_interactive(make_slots):
    slots = make_slots(1)
    arrivals = [(f"batch{n}", Flow(team="a", priority=BATCH)) for n in range(3)]
    arrivals += [(f"interactive{n}", Flow(team="b")) for n in range(3)]
    order = await admission_order(slots, arrivals)
    assert order == ["interactive0", "interactive1", "interactive2", "batch0", "batch1", "batch2"]


async def test_a_free_slot_never_waits_for_fairness(make_slots):
    slots = make_slots(2)
    async with slots.hold(queue_timeout=1, flow=Flow(team="a")):
        # One slot held by team A, one free: team A takes it at once, whatever its share.
        async with slots.hold(queue_timeout=0, flow=Flow(team="a")):
            pass


def test_retry_after_is_bounded_both_ways():
    assert retry_estimate(waiting=0, capacity=8, mean_hold=0.01) == 1
    assert retry_estimate(waiting=9, capacity=2, mean_hold=3.0) == 15
    assert retry_estimate(waiting=10**6, capacity=1, mean_hold=600.0) == RETRY_AFTER_MAX
    assert retry_estimate(waiting=3, capacity=1, mean_hold=None) is None


async def test_timeout_says_when_to_retry_from_the_line(make_slots):
    slots = make_slots(1)
    slots.hold_times.mean = 2.0  # seconds a request holds a slot, as measured
    async with slots.hold(queue_timeout=5):
        tasks = [
            asyncio.create_task(_hold_briefly(slots, Flow(team="a"), queue_timeout=60))
            for _ in range(3)
        ]
        await until_waiting(slots, 3)
        with pytest.raises(SlotTimeout) as refused:
            async with slots.hold(queue_timeout=0.05, flow=Flow(team="b")):
                pass
        # Three ahead and this one, through one slot held about 2 s each.
        assert refused.value.retry_after == 8
        assert await waiting(slots) == 3  # it left the line
    await asyncio.gather(*tasks)


async def _hold_briefly(slots, flow: Flow, queue_timeout: float) -> None:
    async with slots.hold(queue_timeout=queue_timeout, flow=flow):
        await asyncio.sleep(0.001)


async def test_a_cancelled_waiter_leaves_the_line_and_the_next_one_gets_the_slot(make_slots):
    slots = make_slots(1)
    admitted = []
    async with slots.hold(queue_timeout=5):
        cancelled = asyncio.create_task(_hold_briefly(slots, Flow(team="a"), queue_timeout=60))
        await until_waiting(slots, 1)

        async def second() -> None:
            async with slots.hold(queue_timeout=60, flow=Flow(team="b")):
                admitted.append("b")

        task = asyncio.create_task(second())
        await until_waiting(slots, 2)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    await task
    assert admitted == ["b"]


# --- Batch headroom ----------------------------------------------------------------------------

WINDOW = 0.2  # seconds interactive work stays present after it ended (on the faked clocks)
BATCH_FLOW = Flow(team="offline", key="b", priority=BATCH)


@pytest.fixture(params=["local", *TRANSPORTS])
def headroom_slots(request, monkeypatch):
    """
    (make slots with a batch headroom of 1, advance the scheduler's clock): the clock stands
    still until the test moves it (in process: `limits.slots`' time; on Redis: the scripts').
    """
    if request.param in TRANSPORTS:
        request.getfixturevalue(TRANSPORTS[request.param])
        settings = request.getfixturevalue("settings")
        settings.SHARED_LIMITS = {
            **settings.SHARED_LIMITS,
            "timeout": 2,
            "connect_timeout": 2,
            "on_redis_error": "closed",
            "batch_headroom": 1,
            "batch_headroom_seconds": WINDOW,
        }
        for name in ("_ACQUIRE", "_RELEASE", "_RENEW", "_COUNT"):
            faked, found = REDIS_NOW.subn(FAKE_NOW, getattr(redis_slots, name))
            assert found == 1, f"redis_slots.{name} no longer reads TIME as expected"
            monkeypatch.setattr(redis_slots, name, faked)
        clock = RedisClock(request.getfixturevalue("redis_server"), MINUTE_START)
        return lambda capacity: RedisSlots(f"headroom-{next(_names)}", capacity), clock.advance
    fake = FakeClock()
    monkeypatch.setattr(slots_module, "time", fake)
    return (
        lambda capacity: LocalSlots(capacity, headroom=1, headroom_seconds=WINDOW),
        fake.advance,
    )


class Holders:
    """Requests that hold their slot until `done` is set, counted once admitted."""

    def __init__(self, slots) -> None:
        self.slots = slots
        self.admitted = 0
        self.done = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, count: int, flow: Flow) -> None:
        for _ in range(count):
            self.tasks.append(asyncio.create_task(self._one(flow)))

    async def _one(self, flow: Flow) -> None:
        async with self.slots.hold(queue_timeout=60, flow=flow):
            self.admitted += 1
            await self.done.wait()

    async def finish(self) -> None:
        self.done.set()
        await asyncio.gather(*self.tasks)


async def _interactive_just_ended(slots) -> None:
    async with slots.hold(queue_timeout=5, flow=Flow(team="people", key="i")):
        pass


async def test_batch_leaves_a_slot_free_while_interactive_work_holds_one(headroom_slots):
    make, advance = headroom_slots
    slots = make(4)
    batch = Holders(slots)
    async with slots.hold(queue_timeout=5, flow=Flow(team="people", key="i")):
        batch.start(4, BATCH_FLOW)
        await until_waiting(slots, 2)
        # One slot interactive, two batch, one kept free.
        await eventually_equal(lambda: batch.admitted, 2)
        assert await waiting(slots) == 2
    # The interactive request ended: batch may take one more, still leaving one free while
    # interactive work is recent.
    await eventually_equal(lambda: batch.admitted, 3)
    assert await waiting(slots) == 1
    # The window passes with no other event: the held-back line is granted the last slot.
    advance(WINDOW + 0.01)
    await eventually_equal(lambda: batch.admitted, 4)
    assert await waiting(slots) == 0
    await batch.finish()


async def test_without_interactive_work_batch_takes_every_slot(headroom_slots):
    make, _advance = headroom_slots
    slots = make(4)
    batch = Holders(slots)
    batch.start(4, BATCH_FLOW)
    await eventually_equal(lambda: batch.admitted, 4)
    assert await waiting(slots) == 0
    await batch.finish()


async def test_interactive_request_finds_the_slot_batch_left_free(headroom_slots):
    make, _advance = headroom_slots
    slots = make(4)
    await _interactive_just_ended(slots)
    batch = Holders(slots)
    batch.start(5, BATCH_FLOW)
    await until_waiting(slots, 2)
    await eventually_equal(lambda: batch.admitted, 3)  # slots - 1
    # No waiting allowed: the free slot is there at once, ahead of the waiting batch lines.
    async with slots.hold(queue_timeout=0, flow=Flow(team="people", key="i")):
        assert await waiting(slots) == 2
    # And with a line to join, at once too.
    async with slots.hold(queue_timeout=5, flow=Flow(team="people", key="i")):
        assert batch.admitted == 3
    await batch.finish()
    assert batch.admitted == 5


async def test_a_single_slot_keeps_no_headroom(headroom_slots):
    make, _advance = headroom_slots
    slots = make(1)
    await _interactive_just_ended(slots)
    async with slots.hold(queue_timeout=0, flow=BATCH_FLOW):
        pass


async def test_headroom_zero_is_off():
    slots = LocalSlots(4, headroom=0)
    await _interactive_just_ended(slots)
    batch = Holders(slots)
    batch.start(4, BATCH_FLOW)
    await eventually(lambda: batch.admitted == 4)
    await batch.finish()
