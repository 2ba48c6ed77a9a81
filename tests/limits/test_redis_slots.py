"""RedisSlots against a real redis-server, in this process and across real processes."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from limits import redis_client, redis_events, redis_slots
from limits.exceptions import LimitsUnavailable
from limits.redis_slots import RedisSlots
from limits.slots import SlotTimeout
from tests.limits.conftest import shared_limits_settings


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
    await asyncio.sleep(redis_slots.WARM_SECONDS * 3)  # leases kept to hand on go back too
    assert await slots.shared_counts() == (0, 0)


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
        started = time.monotonic()
        with pytest.raises(SlotTimeout):
            async with slots.hold(queue_timeout=0.3):
                pass
        assert time.monotonic() - started >= 0.3
        await asyncio.sleep(0.05)  # leaving the line runs in the background
        assert await slots.shared_counts() == (1, 0)


async def test_cancelled_waiter_leaves_the_line(use_redis):
    slots = RedisSlots("model", 1)
    async with slots.hold(queue_timeout=1):
        waiter = asyncio.create_task(slots.hold(queue_timeout=10).__aenter__())
        for _ in range(100):
            if (await slots.shared_counts())[1] == 1:
                break
            await asyncio.sleep(0.01)
        assert await slots.shared_counts() == (1, 1)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        await asyncio.sleep(0.05)
        assert await slots.shared_counts() == (1, 0)


async def test_released_slot_wakes_the_next_waiter_quickly(use_redis):
    slots = RedisSlots("model", 1)
    released_at = 0.0

    async def first() -> None:
        nonlocal released_at
        async with slots.hold(queue_timeout=1):
            await asyncio.sleep(0.6)  # the waiter's polling backs off to its maximum meanwhile
        released_at = time.monotonic()

    task = asyncio.create_task(first())
    await asyncio.sleep(0.05)
    async with slots.hold(queue_timeout=5):
        admitted_at = time.monotonic()
    await task
    # A published wake-up, not the next poll (250 ms at most), admitted the waiter.
    assert admitted_at - released_at < 0.1


async def test_lease_is_renewed_while_held(settings, use_redis):
    settings.SHARED_LIMITS = shared_limits_settings(use_redis.url, lease_seconds=0.3)
    slots = RedisSlots("model", 1)
    async with slots.hold(queue_timeout=1):
        await asyncio.sleep(1.0)  # more than three leases
        assert await slots.shared_counts() == (1, 0)
        with pytest.raises(SlotTimeout):
            async with slots.hold(queue_timeout=0):
                pass
    assert await slots.shared_counts() == (0, 0)


async def test_lost_lease_is_taken_back_when_there_is_room(settings, use_redis):
    settings.SHARED_LIMITS = shared_limits_settings(use_redis.url, lease_seconds=0.3)
    slots = RedisSlots("model", 2)
    async with slots.hold(queue_timeout=1):
        use_redis.command("FLUSHALL")  # as after a Redis restart without persistence
        assert await slots.shared_counts() == (0, 0)
        await asyncio.sleep(0.25)  # one renewal
        assert await slots.shared_counts() == (1, 0)


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
    killed_at = time.monotonic()
    async with slots.hold(queue_timeout=5):
        waited = time.monotonic() - killed_at
    assert waited <= 1.5  # the lease (1 s) plus a poll


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
        for _ in range(200):
            reply = use_redis.command("ZCARD", "{test:slots:fifo}:line:i")
            if reply == b":%d\r\n" % (order.index(name) + 1):
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"{name} did not queue: {reply!r}")
    a.send("")
    b.send("")
    holder.process.kill()  # its lease (10 s) would hold the line: free it by hand
    use_redis.command("DEL", "{test:slots:fifo}:holders")
    a.message(timeout=30)
    b.message(timeout=30)
    admitted = use_redis.command("LRANGE", "admitted", "0", "-1").decode().split("\r\n")
    assert [line for line in admitted if line[:1] in ("a", "b")] == order


async def test_open_policy_admits_uncounted_while_redis_is_down_and_recovers(use_own_redis):
    slots = RedisSlots("model", 1)
    async with slots.hold(queue_timeout=1):
        assert await slots.shared_counts() == (1, 0)
    use_own_redis.kill()
    started = time.monotonic()
    async with slots.hold(queue_timeout=1):  # admitted, counted nowhere
        async with slots.hold(queue_timeout=1):  # beyond the capacity: nothing is counted
            pass
    assert time.monotonic() - started < 1.0
    assert (await redis_client.redis_status())["redis"] == "down"
    use_own_redis.start()
    await asyncio.sleep(0.3)  # the retry pause after a failure
    async with slots.hold(queue_timeout=1):
        assert await slots.shared_counts() == (1, 0)
    assert await redis_client.redis_status() == {"redis": "ok", "mode": "open"}


async def test_closed_policy_refuses_quickly_while_redis_is_down_and_recovers(
    settings, use_own_redis
):
    settings.SHARED_LIMITS = shared_limits_settings(use_own_redis.url, on_redis_error="closed")
    slots = RedisSlots("model", 1)
    use_own_redis.kill()
    for _ in range(3):  # the first try, then the retry pause answers without a round trip
        started = time.monotonic()
        with pytest.raises(LimitsUnavailable):
            async with slots.hold(queue_timeout=5):
                pass
        assert time.monotonic() - started < 1.0
    assert await redis_client.redis_status() == {"redis": "down", "mode": "closed"}
    use_own_redis.start()
    await asyncio.sleep(0.3)
    async with slots.hold(queue_timeout=1):
        assert await slots.shared_counts() == (1, 0)


async def test_unreachable_host_costs_at_most_the_short_timeouts(settings, use_redis):
    # 192.0.2.0/24 is reserved for documentation: nothing answers (or it is unroutable).
    settings.SHARED_LIMITS = shared_limits_settings(
        "redis://192.0.2.1:6379/0", on_redis_error="closed"
    )
    slots = RedisSlots("model", 1)
    started = time.monotonic()
    with pytest.raises(LimitsUnavailable):
        async with slots.hold(queue_timeout=5):
            pass
    assert time.monotonic() - started < 1.0


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity"):
        RedisSlots("model", 0)


async def test_a_killed_waiter_does_not_block_the_line(use_redis, workers):
    slots = RedisSlots("fifo", 1)
    async with slots.hold(queue_timeout=1):
        dead = workers(use_redis.url, "queue", 1)
        dead.send("dead")
        assert dead.message() == {"queued": "dead"}
        for _ in range(200):
            if (await slots.shared_counts())[1] == 1:
                break
            await asyncio.sleep(0.01)
        dead.process.kill()  # first in line, and gone without leaving it
    started = time.monotonic()
    async with slots.hold(queue_timeout=10):
        waited = time.monotonic() - started
    assert waited < 3.0  # the dead waiter's heartbeat (2 s) expired; it was never admitted
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
    await asyncio.sleep(redis_slots.WARM_SECONDS * 3)
    assert await slots.shared_counts() == (0, 0)  # kept only for a moment


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
        async with slots.hold(queue_timeout=5):  # the holder's next request, right after
            order.append("holder's next")

    async def filler() -> None:
        async with slots.hold(queue_timeout=1):  # now full
            await asyncio.sleep(0.5)

    async def waiter() -> None:
        async with slots.hold(queue_timeout=5):
            order.append("waiter")
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(holder())]
    await asyncio.sleep(0.05)
    tasks.append(asyncio.create_task(filler()))
    await asyncio.sleep(0.05)
    tasks.append(asyncio.create_task(waiter()))
    await asyncio.sleep(0.1)  # the waiter is in line
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
    assert await redis_events.wait_connected(5)
    keeper, other, newcomer = (RedisSlots("shared", 2) for _ in range(3))  # three workers
    async with keeper.hold(queue_timeout=1):
        pass  # one of two in use at its admission: roomy, so the lease is kept
    assert await keeper.shared_counts() == (1, 0)
    async with other.hold(queue_timeout=1):  # now both slots are held
        async with newcomer.hold(queue_timeout=5):  # waits, and says so
            assert await newcomer.shared_counts() == (2, 0)
