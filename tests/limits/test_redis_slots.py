"""RedisSlots against a real redis-server, in this process and across real processes."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from limits import redis_client, redis_events, redis_slots
from limits.exceptions import LimitsUnavailable
from limits.redis_slots import RedisSlots
from limits.slots import SlotTimeout
from tests.limits.conftest import shared_limits_settings
from tests.waiting import FakeClock, eventually, eventually_equal, wait_until


async def waiting(slots: RedisSlots, count: int) -> None:
    """Until `count` requests wait in the slot set's shared line."""
    await eventually_equal(lambda: _waiting(slots), count)


async def _waiting(slots: RedisSlots) -> int:
    return (await slots.shared_counts())[1]


async def test_holds_at_most_capacity_at_once_and_frees_every_slot(use_redis):
    slots = RedisSlots("model", 3)
    active = peak = 0

    async def one() -> None:
        nonlocal active, peak
        async with slots.hold(queue_timeout=10):
            active += 1
            peak = max(peak, active)
            assert slots.in_use <= 3
            await asyncio.sleep(0.005)
            active -= 1

    await asyncio.gather(*(one() for _ in range(30)))
    assert peak == 3
    assert slots.in_use == 0
    await eventually_equal(slots.shared_counts, (0, 0))  # leases kept to hand on go back too


async def test_full_slots_refuse_at_once_with_zero_queue_timeout(use_redis):
    slots = RedisSlots("model", 1)
    async with slots.hold(queue_timeout=1):
        assert await slots.shared_counts() == (1, 0)
        with pytest.raises(SlotTimeout):
            async with slots.hold(queue_timeout=0):
                pass
        assert await slots.shared_counts() == (1, 0)  # refused without queueing


async def test_waiter_times_out_and_leaves_the_line(use_redis):
    slots = RedisSlots("model", 1)
    async with slots.hold(queue_timeout=1):

        async def wait_in_line() -> None:
            async with slots.hold(queue_timeout=0.3):
                pass

        waiter = asyncio.create_task(wait_in_line())
        await waiting(slots, 1)  # it queued rather than being refused at once
        with pytest.raises(SlotTimeout):
            await waiter
        # Leaving the line runs in the background.
        await eventually_equal(slots.shared_counts, (1, 0))


async def test_cancelled_waiter_leaves_the_line(use_redis):
    slots = RedisSlots("model", 1)
    async with slots.hold(queue_timeout=1):
        waiter = asyncio.create_task(slots.hold(queue_timeout=60).__aenter__())
        await waiting(slots, 1)
        assert await slots.shared_counts() == (1, 1)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        await eventually_equal(slots.shared_counts, (1, 0))


async def test_released_slot_wakes_the_next_waiter(use_redis, monkeypatch):
    # Waiters never poll within the test: only the wake-up published on release admits one.
    monkeypatch.setattr(redis_slots, "POLL_MIN", 3600.0)
    monkeypatch.setattr(redis_slots, "POLL_MAX", 3600.0)
    redis_events.ensure_listener()
    assert await redis_events.wait_connected(30)
    slots = RedisSlots("model", 1)
    release = asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with slots.hold(queue_timeout=1):
            await release.wait()
        order.append("released")

    async def second() -> None:
        async with slots.hold(queue_timeout=60):
            order.append("admitted")

    holder = asyncio.create_task(first())
    await eventually_equal(slots.shared_counts, (1, 0))
    waiter = asyncio.create_task(second())
    await waiting(slots, 1)
    release.set()
    await asyncio.gather(holder, waiter)
    assert order == ["released", "admitted"]


async def test_lease_is_renewed_while_held(settings, use_redis):
    settings.SHARED_LIMITS = shared_limits_settings(use_redis.url, lease_seconds=3.0)
    slots = RedisSlots("model", 1)
    (holders,) = slots._keys("holders")

    async def expiry() -> float:
        ((_, score),) = await redis_client.client().zrange(holders, 0, -1, withscores=True)
        return score

    async with slots.hold(queue_timeout=1):
        first = await expiry()
        later = await eventually(lambda: _later(expiry, first))  # renewed every lease/3
        assert later > first
        assert await slots.shared_counts() == (1, 0)
        with pytest.raises(SlotTimeout):
            async with slots.hold(queue_timeout=0):
                pass
    await eventually_equal(slots.shared_counts, (0, 0))


async def _later(read, than: float) -> float | None:
    value = await read()
    return value if value > than else None


async def test_lost_lease_is_taken_back_when_there_is_room(settings, use_redis):
    settings.SHARED_LIMITS = shared_limits_settings(use_redis.url, lease_seconds=3.0)
    slots = RedisSlots("model", 2)
    async with slots.hold(queue_timeout=1):
        use_redis.command("FLUSHALL")  # as after a Redis restart without persistence
        await eventually_equal(slots.shared_counts, (1, 0))  # the next renewal takes it back


def test_two_processes_never_exceed_the_shared_capacity(use_redis, workers):
    use_redis.command("FLUSHALL")
    pair = [workers(use_redis.url, "hammer", 4, 64, 0.01) for _ in range(2)]
    for worker in pair:
        assert worker.message(timeout=60) == {"done": 64}
    assert use_redis.command("GET", "max_active") == b"$1\r\n4\r\n"
    assert use_redis.command("GET", "active") == b"$1\r\n0\r\n"


async def test_slots_of_a_killed_holder_free_themselves_after_the_lease(use_redis, workers):
    holder = workers(use_redis.url, "hold", "held", 2, 2, LIMITS__LEASE_SECONDS="1")
    assert holder.message() == {"held": 2}
    slots = RedisSlots("held", 2)
    with pytest.raises(SlotTimeout):
        async with slots.hold(queue_timeout=0):
            pass
    holder.process.kill()  # SIGKILL: no release, no more renewals
    holder.process.wait(timeout=30)
    # Nobody releases them: the holder's leases (1 s) end, and a waiter's poll finds the room.
    async with slots.hold(queue_timeout=60):
        await eventually_equal(slots.shared_counts, (1, 0))  # both dead leases are gone


def test_waiters_are_admitted_first_come_first_served_across_processes(use_redis, workers):
    a = workers(use_redis.url, "queue", 1)
    b = workers(use_redis.url, "queue", 1)
    holder = workers(use_redis.url, "hold", "fifo", 1, 1)
    assert holder.message() == {"held": 1}
    order = ["a1", "b1", "a2", "b2", "b3", "a3"]
    for name in order:
        worker = a if name.startswith("a") else b
        worker.send(name)
        assert worker.message() == {"queued": name}
        # The waiter has taken its ticket once the line has grown.
        in_line = b":%d\r\n" % (order.index(name) + 1)
        wait_until(
            lambda in_line=in_line: (
                use_redis.command("ZCARD", "{test:slots:fifo}:line:i") == in_line
            )
        )
    a.send("")
    b.send("")
    holder.process.kill()  # its lease (10 s) would hold the line: free it by hand
    use_redis.command("DEL", "{test:slots:fifo}:holders")
    a.message(timeout=60)
    b.message(timeout=60)
    admitted = use_redis.command("LRANGE", "admitted", "0", "-1").decode().split("\r\n")
    assert [line for line in admitted if line[:1] in ("a", "b")] == order


@pytest.mark.fake_clock
@pytest.mark.parametrize("client", ["pipelined", "redis-py"])
async def test_open_policy_admits_uncounted_while_redis_is_down_and_recovers(
    settings, use_own_redis, monkeypatch, pipelines, client
):
    clock = FakeClock()
    monkeypatch.setattr(redis_client, "time", clock)  # the retry pause after a failure
    settings.SHARED_LIMITS = shared_limits_settings(use_own_redis.url, client=client)
    slots = RedisSlots("model", 1)
    async with slots.hold(queue_timeout=1):
        assert await slots.shared_counts() == (1, 0)
    await eventually_equal(slots.shared_counts, (0, 0))
    use_own_redis.kill()
    async with slots.hold(queue_timeout=60):  # admitted, counted nowhere
        tried = len(pipelines)
        async with slots.hold(queue_timeout=60):  # beyond the capacity: nothing is counted
            pass
    assert len(pipelines) == tried  # within the retry pause, Redis is not even tried
    assert (await redis_client.redis_status())["redis"] == "down"
    use_own_redis.start()
    clock.advance(redis_client.config().retry_seconds)  # the pause is over
    async with slots.hold(queue_timeout=1):
        assert await slots.shared_counts() == (1, 0)
    assert await redis_client.redis_status() == {"redis": "ok", "mode": "open"}


@pytest.mark.fake_clock
@pytest.mark.parametrize("client", ["pipelined", "redis-py"])
async def test_closed_policy_refuses_without_round_trips_while_redis_is_down_and_recovers(
    settings, use_own_redis, monkeypatch, pipelines, client
):
    clock = FakeClock()
    monkeypatch.setattr(redis_client, "time", clock)
    settings.SHARED_LIMITS = shared_limits_settings(
        use_own_redis.url, on_redis_error="closed", client=client
    )
    slots = RedisSlots("model", 1)
    use_own_redis.kill()
    with pytest.raises(LimitsUnavailable):  # the first try finds Redis down
        async with slots.hold(queue_timeout=60):
            pass
    tried = len(pipelines)
    for _ in range(2):  # then the retry pause answers without a round trip
        with pytest.raises(LimitsUnavailable):
            async with slots.hold(queue_timeout=60):
                pass
    assert len(pipelines) == tried
    assert await redis_client.redis_status() == {"redis": "down", "mode": "closed"}
    use_own_redis.start()
    clock.advance(redis_client.config().retry_seconds)
    async with slots.hold(queue_timeout=1):
        assert await slots.shared_counts() == (1, 0)


async def test_unreachable_host_costs_at_most_the_short_timeouts(settings, use_redis):
    # 192.0.2.0/24 is reserved for documentation: nothing answers (or it is unroutable).
    settings.SHARED_LIMITS = shared_limits_settings(
        "redis://192.0.2.1:6379/0", on_redis_error="closed"
    )
    slots = RedisSlots("model", 1)
    # The connect timeout ends the try (a hang would reach the test's own deadline instead).
    attempt = asyncio.create_task(_hold_once(slots, queue_timeout=60))
    done, _ = await asyncio.wait({attempt}, timeout=60)
    assert attempt in done, "the connection attempt was not bounded"
    assert isinstance(attempt.exception(), LimitsUnavailable)


async def _hold_once(slots: RedisSlots, *, queue_timeout: float) -> None:
    async with slots.hold(queue_timeout=queue_timeout):
        pass


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity"):
        RedisSlots("model", 0)


async def test_a_killed_waiter_does_not_block_the_line(use_redis, workers):
    slots = RedisSlots("fifo", 1)
    async with slots.hold(queue_timeout=1):
        dead = workers(use_redis.url, "queue", 1)
        dead.send("dead")
        # Waited for off the loop, which renews this test's lease meanwhile.
        assert await asyncio.to_thread(dead.message) == {"queued": "dead"}
        await waiting(slots, 1)
        dead.process.kill()  # first in line, and gone without leaving it
        await asyncio.to_thread(dead.process.wait, 30)
    # The dead waiter's heartbeat (2 s) expires and it leaves the line, never admitted.
    async with slots.hold(queue_timeout=60):
        assert await slots.shared_counts() == (1, 0)
    assert use_redis.command("LLEN", "admitted") == b":0\r\n"


async def test_a_finished_lease_is_handed_to_the_next_request_without_a_round_trip(
    use_redis, pipelines
):
    slots = RedisSlots("handed", 4)
    for _ in range(5):
        async with slots.hold(queue_timeout=1):
            assert await slots.shared_counts() == (1, 0)  # one lease, never two
    acquired = [name for pipeline in pipelines for name in pipeline if name == "slot acquire"]
    assert acquired == ["slot acquire"]
    await eventually_equal(slots.shared_counts, (0, 0))  # kept only for a moment


async def test_no_lease_is_handed_on_while_the_model_is_more_than_half_busy(use_redis, pipelines):
    slots = RedisSlots("busy", 2)
    async with slots.hold(queue_timeout=1):
        async with slots.hold(queue_timeout=1):
            pass  # two of two in use: this lease goes back to the line at once
        await redis_client.flush()
        assert await slots.shared_counts() == (1, 0)


async def test_a_waiting_request_gets_the_lease_before_a_newcomer_of_the_holder(use_redis):
    slots = RedisSlots("fair", 2)
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with slots.hold(queue_timeout=1):  # half the slots free after it: roomy
            await release.wait()
        async with slots.hold(queue_timeout=60):  # the holder's next request, right after
            order.append("holder's next")

    async def filler() -> None:
        async with slots.hold(queue_timeout=1):  # now full, until someone else got in
            await eventually(lambda: order)

    async def waiter() -> None:
        async with slots.hold(queue_timeout=60):
            order.append("waiter")

    tasks = [asyncio.create_task(holder())]
    await eventually_equal(slots.shared_counts, (1, 0))
    tasks.append(asyncio.create_task(filler()))
    await eventually_equal(slots.shared_counts, (2, 0))
    tasks.append(asyncio.create_task(waiter()))
    await waiting(slots, 1)
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["waiter", "holder's next"]


async def test_a_request_joining_the_line_makes_other_workers_give_kept_leases_back(
    use_redis, monkeypatch
):
    # Leases would be kept for a long time, and the slot set never looked at again: only
    # the message a newcomer to the line publishes can free the kept lease in time.
    monkeypatch.setattr(redis_slots, "WARM_SECONDS", 60.0)
    monkeypatch.setattr(redis_slots, "ROOMY_SECONDS", 60.0)
    redis_events.ensure_listener()  # as the gateway does at start-up
    assert await redis_events.wait_connected(30)
    keeper, other, newcomer = (RedisSlots("shared", 2) for _ in range(3))  # three workers
    async with keeper.hold(queue_timeout=1):
        pass  # one of two in use at its admission: roomy, so the lease is kept
    assert await keeper.shared_counts() == (1, 0)
    async with other.hold(queue_timeout=1):  # now both slots are held
        async with newcomer.hold(queue_timeout=60):  # waits, and says so
            assert await newcomer.shared_counts() == (2, 0)
