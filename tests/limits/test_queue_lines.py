"""The shared line read by team and priority for the staff dashboard (`limits.queue_lines`)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from limits import queue_lines
from limits.flows import BATCH, Flow
from limits.redis_slots import RedisSlots
from tests.limits.conftest import TRANSPORTS, shared_limits_settings


@pytest.fixture(params=list(TRANSPORTS))
def shared(request):
    return request.getfixturevalue(TRANSPORTS[request.param])


async def until(check) -> None:
    for _ in range(2000):
        if await check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never reached")


async def test_every_waiter_is_counted_by_team_and_priority(shared):
    slots = RedisSlots("dashboard", 1)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(slots.hold(queue_timeout=5))
        flows = [
            Flow(team="research", key="1"),
            Flow(team="research", key="2"),
            Flow(team="ops", key="3", priority=BATCH),
            Flow(),
        ]
        waiters = [
            asyncio.create_task(_hold(slots, flow)) for flow in flows
        ]  # they wait: the one slot is held

        async def all_in_line() -> bool:
            return (await slots.shared_counts())[1] == len(flows)

        await until(all_in_line)
        figures = await queue_lines.shared_lines(["dashboard", "idle-model"])
    assert figures == {
        ("dashboard", "research", "interactive"): 2,
        ("dashboard", "ops", "batch"): 1,
        ("dashboard", "", "interactive"): 1,
    }
    await asyncio.gather(*waiters)
    assert await queue_lines.shared_lines(["dashboard"]) == {}


async def test_waiters_beyond_the_scan_limit_are_counted_apart(use_redis, monkeypatch):
    monkeypatch.setattr(queue_lines, "_BY_TEAM", queue_lines._BY_TEAM.replace("0, 999", "0, 0"))
    slots = RedisSlots("dashboard", 1)
    async with slots.hold(queue_timeout=5):
        waiters = [asyncio.create_task(_hold(slots, Flow(team="t"))) for _ in range(3)]

        async def all_in_line() -> bool:
            return (await slots.shared_counts())[1] == 3

        await until(all_in_line)
        figures = await queue_lines.shared_lines(["dashboard"])
    assert figures == {
        ("dashboard", "t", "interactive"): 1,
        ("dashboard", "other", "interactive"): 2,
    }
    await asyncio.gather(*waiters)


async def test_an_unreachable_redis_reads_as_unknown(settings, use_redis):
    settings.SHARED_LIMITS = shared_limits_settings("redis://192.0.2.1:6379/0", connect_timeout=0.2)
    assert await queue_lines.shared_lines(["dashboard"]) is None


async def test_without_redis_there_is_no_shared_line(settings):
    settings.SHARED_LIMITS = {}
    assert await queue_lines.shared_lines(["dashboard"]) is None


async def _hold(slots: RedisSlots, flow: Flow) -> None:
    async with slots.hold(queue_timeout=30, flow=flow):
        pass
