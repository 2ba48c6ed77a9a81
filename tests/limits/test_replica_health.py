"""Replica ejection shared by processes through Redis, read from a local view."""

from __future__ import annotations

import asyncio

from infra.runtime import get_runtime
from limits import replica_health
from tests.waiting import eventually

EJECT = {"eject_after": 3, "eject_seconds": 30.0}


def forget_local_view() -> None:
    """As in a process that has seen none of this one's reports."""
    get_runtime().drop(replica_health.ReplicaHealthState)


async def test_consecutive_failures_eject_and_a_success_restores(use_redis):
    assert not await replica_health.failed("m", "a:8000", **EJECT)
    assert not await replica_health.failed("m", "a:8000", **EJECT)
    assert not replica_health.is_ejected("m", "a:8000")
    assert await replica_health.failed("m", "a:8000", **EJECT)
    assert replica_health.is_ejected("m", "a:8000")  # at once in the reporting process
    assert not replica_health.is_ejected("m", "b:8000")
    assert not replica_health.is_ejected("other", "a:8000")
    await replica_health.succeeded("m", "a:8000")
    assert not replica_health.is_ejected("m", "a:8000")
    await replica_health.refresh()
    assert not replica_health.is_ejected("m", "a:8000")


async def test_failures_of_several_processes_add_up(use_redis):
    # Two failures "elsewhere", written as another process would.
    for _ in range(2):
        await replica_health.failed("m", "a:8000", **EJECT)
    forget_local_view()  # this process has seen none of them
    assert await replica_health.failed("m", "a:8000", **EJECT)


async def test_another_processes_ejection_is_seen_after_a_refresh(use_redis):
    for _ in range(3):
        await replica_health.failed("m", "a:8000", **EJECT)
    forget_local_view()
    assert not replica_health.is_ejected("m", "a:8000")  # starts the refresher
    await eventually(lambda: replica_health.is_ejected("m", "a:8000"))


async def test_a_success_elsewhere_restores_the_replica_for_everyone(use_redis):
    for _ in range(3):
        await replica_health.failed("m", "a:8000", **EJECT)
    await replica_health.succeeded("m", "a:8000")  # as another process would, in Redis
    forget_local_view()
    await replica_health.refresh()
    assert not replica_health.is_ejected("m", "a:8000")


async def test_ejection_ends_after_eject_seconds(use_redis):
    for _ in range(3):
        await replica_health.failed("m", "a:8000", eject_after=3, eject_seconds=1.0)
    assert replica_health.is_ejected("m", "a:8000")
    await asyncio.sleep(1.1)  # at least the ejection's length (a busy machine only adds to it)
    await replica_health.refresh()
    assert not replica_health.is_ejected("m", "a:8000")
    # Still failing: the next failure ejects it again.
    assert await replica_health.failed("m", "a:8000", eject_after=3, eject_seconds=1.0)


async def test_without_redis_the_process_counts_alone():
    for _ in range(2):
        assert not await replica_health.failed("m", "a:8000", **EJECT)
    assert await replica_health.failed("m", "a:8000", **EJECT)
    assert replica_health.is_ejected("m", "a:8000")
    await replica_health.succeeded("m", "a:8000")
    assert not replica_health.is_ejected("m", "a:8000")


async def test_redis_down_falls_back_to_local_counts(use_own_redis):
    use_own_redis.kill()
    for _ in range(2):
        assert not await replica_health.failed("m", "a:8000", **EJECT)
    assert await replica_health.failed("m", "a:8000", **EJECT)
    assert replica_health.is_ejected("m", "a:8000")
