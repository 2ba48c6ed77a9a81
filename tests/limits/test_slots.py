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
        lambda capacity: LocalSlots(capacity, headroom=1, headroom_seconds=WINDOW, preempt=False),
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


# --- Preemption --------------------------------------------------------------------------------


LINE_FLOW = Flow(team="offline", key="b", priority=BATCH, preemptible=True)


class BatchLines:
    """Batch lines that hold their slot until `done` is set; each records how it ended."""

    def __init__(self, slots, flow: Flow = LINE_FLOW) -> None:
        self.slots = slots
        self.flow = flow
        self.done = asyncio.Event()
        self.admitted: list[int] = []
        self.ended: dict[int, str] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}

    async def start(self, number: int) -> None:
        """Start line `number` and wait until it holds a slot (so the order of grants is known)."""
        self.tasks[number] = asyncio.create_task(self._one(number))
        await eventually(lambda: number in self.admitted)

    async def _one(self, number: int) -> None:
        try:
            async with self.slots.hold(queue_timeout=60, flow=self.flow):
                self.admitted.append(number)
                await self.done.wait()
        except asyncio.CancelledError as exc:
            self.ended[number] = "preempted" if slots_module.is_preemption(exc) else "cancelled"
            raise
        self.ended[number] = "finished"

    async def finish(self) -> None:
        self.done.set()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


async def test_an_interactive_request_preempts_the_youngest_batch_line():
    slots = LocalSlots(3, preempt=True, headroom=1)
    lines = BatchLines(slots)
    for number in range(3):
        await lines.start(number)
    async with slots.hold(queue_timeout=5, flow=Flow(team="people", key="i")):
        # Granted: the line that started last gave its slot back; the older two hold theirs.
        assert lines.ended == {2: "preempted"}
        assert slots.in_use == 3
    await lines.finish()
    assert lines.ended == {0: "finished", 1: "finished", 2: "preempted"}


async def test_one_batch_line_is_preempted_per_interactive_request_waiting():
    slots = LocalSlots(4, preempt=True)
    lines = BatchLines(slots)
    for number in range(3):
        await lines.start(number)
    person = Holders(slots)
    person.start(1, Flow(team="people", key="i"))  # the free slot: nobody is preempted
    await eventually_equal(lambda: person.admitted, 1)
    assert lines.ended == {}
    person.start(2, Flow(team="people", key="j"))  # two more: the two youngest lines
    await eventually_equal(lambda: person.admitted, 3)
    assert lines.ended == {2: "preempted", 1: "preempted"}
    await person.finish()
    await lines.finish()
    assert lines.ended[0] == "finished"


async def test_batch_work_waiting_preempts_nobody():
    slots = LocalSlots(2, preempt=True)
    lines = BatchLines(slots)
    for number in range(2):
        await lines.start(number)
    later = asyncio.create_task(lines._one(2))
    await until_waiting(slots, 1)
    assert lines.ended == {}
    await lines.finish()
    await later
    assert lines.ended == {0: "finished", 1: "finished", 2: "finished"}


async def test_a_request_that_may_not_wait_preempts_nobody():
    slots = LocalSlots(1, preempt=True)
    lines = BatchLines(slots)
    await lines.start(0)
    with pytest.raises(SlotTimeout):
        async with slots.hold(queue_timeout=0, flow=Flow(team="people", key="i")):
            pass
    assert lines.ended == {}
    await lines.finish()


async def test_without_preemption_interactive_work_waits_for_a_batch_line_to_end():
    slots = LocalSlots(1, preempt=False)
    lines = BatchLines(slots)
    await lines.start(0)
    person = Holders(slots)
    person.start(1, Flow(team="people", key="i"))
    await until_waiting(slots, 1)
    assert person.admitted == 0 and lines.ended == {}
    lines.done.set()
    await eventually_equal(lambda: person.admitted, 1)
    await person.finish()
    await lines.finish()
    assert lines.ended == {0: "finished"}


def test_preemption_follows_the_setting(settings):
    settings.SHARED_LIMITS = {**settings.SHARED_LIMITS, "batch_preempt": False}
    assert LocalSlots(4).preempt is False
    settings.SHARED_LIMITS = {**settings.SHARED_LIMITS, "batch_preempt": True}
    assert LocalSlots(4).preempt is True


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(slots_module, "time", fake)
    return fake


async def _batch_lines_started_at(slots, clock, *offsets: float) -> BatchLines:
    lines = BatchLines(slots)
    for number, offset in enumerate(offsets):
        clock.advance(offset)
        await lines.start(number)
    return lines


async def _a_request_waiting_beside_two_lines(clock) -> tuple[BatchLines, Holders]:
    """
    Two slots held a second each, as a rule; line 0 from 0 s, line 1 from 0.5 s; an
    interactive request at 0.9 s: line 0 should end in 0.1 s, sooner than the 0.4 s line 1 has
    run, so the request waits and nothing is cut (yet).
    """
    slots = LocalSlots(2, preempt=True)
    slots.hold_times.add(1.0)
    lines = await _batch_lines_started_at(slots, clock, 0.0, 0.5)
    clock.advance(0.4)
    person = Holders(slots)
    person.start(1, Flow(team="people", key="i"))
    await until_waiting(slots, 1)
    assert lines.ended == {}
    return lines, person


async def test_an_interactive_request_waits_for_a_slot_about_to_free_rather_than_cut_work(clock):
    lines, person = await _a_request_waiting_beside_two_lines(clock)
    lines.done.set()
    await eventually_equal(lambda: person.admitted, 1)
    await person.finish()
    await lines.finish()
    assert lines.ended == {0: "finished", 1: "finished"}


async def test_when_no_slot_frees_as_expected_the_youngest_line_is_cut(clock):
    lines, person = await _a_request_waiting_beside_two_lines(clock)
    # Both lines have now run past the usual hold: neither is expected to end soon.
    clock.advance(0.7)
    await eventually_equal(lambda: person.admitted, 1)
    assert lines.ended == {1: "preempted"}
    await person.finish()
    await lines.finish()
    assert lines.ended == {0: "finished", 1: "preempted"}


async def test_a_young_line_is_cut_at_once_when_no_slot_is_about_to_free(clock):
    slots = LocalSlots(2, preempt=True)
    slots.hold_times.add(1.0)
    # Line 1 has run 0.1 s; line 0 ends in 0.6 s at best: cutting line 1 loses less.
    lines = await _batch_lines_started_at(slots, clock, 0.0, 0.3)
    clock.advance(0.1)
    async with slots.hold(queue_timeout=5, flow=Flow(team="people", key="i")):
        assert lines.ended == {1: "preempted"}
    await lines.finish()


async def test_a_clients_batch_class_request_is_never_cut():
    slots = LocalSlots(1, preempt=True)
    requests = BatchLines(slots, flow=BATCH_FLOW)  # X-LLMAPI-Priority: batch, not a line
    await requests.start(0)
    person = Holders(slots)
    person.start(1, Flow(team="people", key="i"))
    await until_waiting(slots, 1)
    assert requests.ended == {}
    requests.done.set()
    await eventually_equal(lambda: person.admitted, 1)
    await person.finish()
    await requests.finish()
    assert requests.ended == {0: "finished"}


async def test_a_line_granted_its_anti_starvation_turn_is_not_cut():
    slots = LocalSlots(1, preempt=True)
    slots._state().line.batch_every = 0  # batch's turn comes at once when both wait
    first = Holders(slots)
    first.start(1, Flow(team="people", key="x"))
    await eventually_equal(lambda: first.admitted, 1)
    lines = BatchLines(slots)
    waiting_line = asyncio.create_task(lines._one(0))
    await until_waiting(slots, 1)
    person = Holders(slots)
    person.start(1, Flow(team="people", key="i"))
    await until_waiting(slots, 2)
    # The slot frees while both wait: it is the line's turn, and no request may take it back,
    # neither the one waiting nor one arriving after.
    await first.finish()
    await eventually(lambda: lines.admitted == [0])
    person.start(1, Flow(team="people", key="j"))
    await until_waiting(slots, 2)
    assert lines.ended == {} and person.admitted == 0
    lines.done.set()
    await waiting_line
    await eventually_equal(lambda: person.admitted, 1)
    await person.finish()
    assert lines.ended == {0: "finished"}


async def test_a_cut_hold_is_not_counted_in_the_mean_hold_time():
    slots = LocalSlots(1, preempt=True)
    lines = BatchLines(slots)
    await lines.start(0)
    async with slots.hold(queue_timeout=5, flow=Flow(team="people", key="i")):
        assert lines.ended == {0: "preempted"}
        assert slots.hold_times.mean is None
    await lines.finish()


async def test_with_preemption_lines_fill_every_slot_and_other_batch_work_keeps_the_headroom(
    clock,
):
    slots = LocalSlots(4, headroom=1, headroom_seconds=WINDOW, preempt=True)
    async with slots.hold(queue_timeout=5, flow=Flow(team="people", key="i")):
        # Batch lines, which an interactive request can cut: they take every slot left.
        lines = Holders(slots)
        lines.start(3, LINE_FLOW)
        await eventually_equal(lambda: lines.admitted, 3)
        await lines.finish()
        # A client's batch-class requests, which nobody may cut: one slot stays free.
        requests = Holders(slots)
        requests.start(3, BATCH_FLOW)
        await until_waiting(slots, 1)
        await eventually_equal(lambda: requests.admitted, 2)
    clock.advance(WINDOW + 0.01)
    await requests.finish()
    assert requests.admitted == 3
