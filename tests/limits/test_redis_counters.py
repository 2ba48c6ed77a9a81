"""The check-and-reserve counters script at its edges, and its accuracy across processes."""

from __future__ import annotations

import time

import pytest

from limits import redis_client
from limits.exceptions import LimitsUnavailable
from limits.redis_counters import Counter, reserve, settle
from tests.limits.conftest import shared_limits_settings


async def test_admits_up_to_the_limit_then_names_the_counter_and_when_to_retry(use_redis):
    rpm = Counter("key:1:rpm", limit=3, window=60)
    states = []
    for _ in range(3):
        reservation = await reserve([rpm])
        assert reservation.admitted
        states.append(reservation.states[0])
    assert [s.remaining for s in states] == [2, 1, 0]
    assert 59 <= states[-1].reset_after <= 62
    refused = await reserve([rpm])
    assert not refused.admitted
    assert refused.over == rpm
    assert refused.retry_after is not None and 59 <= refused.retry_after <= 62


async def test_one_counter_over_reserves_nothing_on_the_others(use_redis):
    requests = Counter("key:1:rpm", limit=10, window=60)
    tokens = Counter("key:1:tpm", limit=100, window=60, amount=80)
    assert (await reserve([requests, tokens])).admitted
    refused = await reserve([requests, tokens])  # 160 tokens > 100
    assert not refused.admitted
    assert refused.over == tokens
    after = await reserve([Counter("key:1:rpm", limit=10, window=60, amount=0)])
    assert after.states[0].remaining == 9  # the refused call took nothing


async def test_amount_larger_than_the_limit_never_fits(use_redis):
    refused = await reserve([Counter("team:1:day", limit=100, window=86400, amount=101)])
    assert not refused.admitted
    assert refused.retry_after is None


async def test_exactly_the_limit_fits_and_zero_limit_admits_nothing(use_redis):
    assert (await reserve([Counter("a", limit=5, window=60, amount=5)])).admitted
    assert not (await reserve([Counter("b", limit=0, window=60)])).admitted
    assert (await reserve([Counter("b", limit=0, window=60, amount=0)])).admitted


async def test_sliding_window_gives_room_back_bucket_by_bucket(redis_clock):
    counter = Counter("slide", limit=2, window=40, buckets=4)  # 10 s buckets
    redis_clock.advance(5)  # halfway through a bucket
    assert (await reserve([counter])).admitted
    redis_clock.advance(20)
    assert (await reserve([counter])).admitted
    refused = await reserve([counter])
    assert not refused.admitted
    # The first unit leaves first, with its whole bucket: 50 s after the bucket began.
    assert refused.retry_after == pytest.approx(25)
    redis_clock.advance(24.999)
    assert not (await reserve([counter])).admitted
    redis_clock.advance(0.001)
    assert (await reserve([counter])).admitted
    assert not (await reserve([counter])).admitted


async def test_fixed_window_resets_at_its_boundary(redis_clock):
    counter = Counter("fixed", limit=1, window=30, buckets=1)
    redis_clock.advance(10)
    first = await reserve([counter])
    assert first.admitted
    refused = await reserve([counter])
    assert not refused.admitted
    assert refused.retry_after == pytest.approx(20)  # the window's end
    redis_clock.advance(19.999)
    assert not (await reserve([counter])).admitted
    redis_clock.advance(0.001)
    assert (await reserve([counter])).admitted


async def test_settle_gives_back_or_adds_the_difference(use_redis):
    tokens = Counter("tpm", limit=1000, window=60, amount=800)
    reservation = await reserve([tokens])
    assert reservation.states[0].remaining == 200
    await settle(reservation, [300])  # used less than estimated
    probe = Counter("tpm", limit=1000, window=60, amount=0)
    assert (await reserve([probe])).states[0].remaining == 700
    await settle(reservation, [2000])  # the settled reservation was 800; 1200 more now
    assert not (await reserve([Counter("tpm", limit=1000, window=60, amount=1)])).admitted


async def test_settle_never_goes_below_zero(use_redis):
    reservation = await reserve([Counter("tpm", limit=100, window=60, amount=10)])
    await settle(reservation, [-50])
    probe = await reserve([Counter("tpm", limit=100, window=60, amount=0)])
    assert probe.states[0].remaining == 100


async def test_closed_policy_refuses_and_open_admits_uncounted_when_redis_is_down(
    settings, use_own_redis
):
    use_own_redis.kill()
    open_result = await reserve([Counter("x", limit=1, window=60)])
    assert open_result.admitted and not open_result.counted
    await settle(open_result, [5])  # nothing to settle, no error
    settings.SHARED_LIMITS = shared_limits_settings(use_own_redis.url, on_redis_error="closed")
    with pytest.raises(LimitsUnavailable):
        await reserve([Counter("x", limit=1, window=60)])


def test_invalid_counters_are_refused():
    with pytest.raises(ValueError):
        Counter("x", limit=-1, window=60)
    with pytest.raises(ValueError):
        Counter("x", limit=1, window=0)
    with pytest.raises(ValueError):
        Counter("x", limit=1, window=0.01, buckets=60)


def test_two_processes_hammering_one_key_get_exactly_its_limit(use_redis, workers):
    # 30 per "minute", with the minute shortened to 3 s: the two together, hammering for one
    # whole window, are admitted 28 to 32 times (the sliding window makes it exactly 30; each
    # may have one call on its way at the end). 30 calls in 3 s: a busy machine gets there too.
    pair = [workers(use_redis.url, "counter", 30, 3.0) for _ in range(2)]
    for worker in pair:
        assert worker.message() == {"ready": True}
    start = time.time() + 1.0  # both have the times before the start
    for worker in pair:
        worker.send(f"{start} {start + 3.0}")
    results = [worker.message() for worker in pair]
    assert 28 <= sum(r["admitted"] for r in results) <= 32, results
    assert all(r["refused"] > 0 for r in results), results  # both hammered past the limit


async def test_extra_copies_are_reserved_only_while_half_the_limit_stays_free(use_redis):
    counter = Counter("copies", limit=10, window=60)
    reservation = await reserve([counter], extra=10)
    assert reservation.admitted
    assert reservation.extra == 4  # 1 + 4 used: 5 of 10 still free
    assert reservation.states[0].remaining == 5
    probe = await reserve([Counter("copies", limit=10, window=60, amount=0)])
    assert probe.states[0].remaining == 5


async def test_copies_alone_are_never_refused_and_take_nothing_when_they_do_not_fit(use_redis):
    full = Counter("full", limit=2, window=60)
    assert (await reserve([full])).admitted
    copies = await reserve([full], extra=3, required=False)
    assert copies.admitted and copies.extra == 0
    assert (await reserve([full])).admitted  # the second unit was still free
    assert not (await reserve([full])).admitted


async def test_settlements_of_one_window_go_to_redis_as_one_call(use_redis, pipelines):
    counter = Counter("merged", limit=1000, window=60, amount=10)
    held = [await reserve([counter]) for _ in range(3)]
    for reservation in held:
        await settle(reservation, [4])  # 6 fewer each
    await redis_client.flush()
    assert pipelines[-1] == ["counters settle"]
    probe = await reserve([Counter("merged", limit=1000, window=60, amount=0)])
    assert probe.states[0].remaining == 1000 - 12
