"""
Round trips to Redis: a request's quota and its model slot go in one, a refusal frees the slot,
and work after the answer rides along with the next pipeline.
"""

from __future__ import annotations

import asyncio

import pytest

from limits import admission, redis_client, redis_slots
from limits.quotas import Limits, QuotaExceeded, QuotaSubject
from limits.redis_quotas import RedisQuotaStore
from limits.redis_slots import RedisSlots


async def test_the_quota_and_the_slot_share_one_round_trip(use_redis, pipelines):
    store = RedisQuotaStore()
    who = QuotaSubject(key_id="1", key_limits=Limits(requests_per_minute=5, tokens_per_minute=1000))
    slots = RedisSlots("m", 2)
    pending = admission.PendingReservation(store.reserve(who, tokens=10))
    async with slots.hold(queue_timeout=1):
        await pending.confirm()
        assert pipelines == [["slot acquire", "counters"]]
    reservation = await pending.result()
    assert reservation.headers["x-ratelimit-remaining-requests"] == "4"
    await store.settle(reservation, used_tokens=3)
    await redis_client.flush()
    # The end of the request is one more round trip, after the answer: the settlement, and
    # the slot's release once no request on this worker took the slot over in time.
    assert pipelines[1] == ["counters settle"]
    await asyncio.sleep(redis_slots.WARM_SECONDS * 3)
    await redis_client.flush()
    assert pipelines[2:] == [["slot release"]]


async def test_a_refused_quota_gives_the_slot_back(use_redis):
    store = RedisQuotaStore()
    who = QuotaSubject(key_id="1", key_limits=Limits(requests_per_minute=1))
    await store.reserve(who, tokens=0)  # the one request this minute
    slots = RedisSlots("m", 1)
    pending = admission.PendingReservation(store.reserve(who, tokens=0))
    with pytest.raises(QuotaExceeded):
        async with slots.hold(queue_timeout=1):
            await pending.confirm()
            pytest.fail("the model must not be called")
    with pytest.raises(QuotaExceeded):
        await pending.result()
    await redis_client.flush()
    assert await slots.shared_counts() == (0, 0)


INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_work_after_an_answer_rides_with_the_next_pipeline(use_redis, pipelines):
    redis_client.run_script_later("later", INCR, ["n"], [1])
    assert await redis_client.run_script("now", INCR, ["n"], [10]) == 11  # sent after "later"
    assert pipelines == [["later", "now"]]


async def test_once_connected_and_loaded_calls_are_written_at_once(use_redis, pipelines):
    assert await redis_client.run_script("first", INCR, ["n"], [1]) == 1  # connects, loads
    first = redis_client.run_script("a", INCR, ["n"], [1])
    second = redis_client.run_script("b", INCR, ["n"], [1])
    assert await asyncio.gather(first, second) == [2, 3]
    assert pipelines == [["first"], ["a", "b"]]


async def test_scripts_redis_lost_are_loaded_again(use_redis, pipelines):
    assert await redis_client.run_script("x", INCR, ["n"], [1]) == 1
    use_redis.command("SCRIPT", "FLUSH")  # as after a restart, on the same connection
    assert await redis_client.run_script("y", INCR, ["n"], [1]) == 2
    assert pipelines == [["x"], ["y"], ["y"]]  # refused (NOSCRIPT), then loaded and run


async def test_work_after_an_answer_goes_alone_when_nothing_else_does(use_redis, pipelines):
    redis_client.run_script_later("later", INCR, ["n"], [1])
    await asyncio.sleep(redis_client.LATER_SECONDS * 4)
    assert pipelines == [["later"]]
    assert use_redis.command("GET", "n").split(b"\r\n")[1] == b"1"
