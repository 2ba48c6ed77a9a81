"""
Reservations made ahead for a busy key: taken without a round trip, never past a limit, made
only while every limit is at most half used, and given back when unused.
"""

from __future__ import annotations

import pytest

from limits import redis_ahead, redis_client
from limits.quotas import Limits, QuotaExceeded, QuotaSubject, Reservation
from limits.redis_quotas import RedisQuotaStore
from tests.waiting import eventually_equal


async def request(store: RedisQuotaStore, who: QuotaSubject, tokens: int = 10) -> Reservation:
    """What the gateway does for one request: a reservation made ahead, or one of its own."""
    reservation = store.take_ready(who, tokens=tokens)
    if reservation is None:
        reservation = await store.reserve(who, tokens=tokens)
    await store.settle(reservation, used_tokens=tokens)
    return reservation


async def used(who: QuotaSubject, limit: str = "requests_per_minute") -> int:
    await redis_client.flush()  # settlements still waiting for a pipeline
    return (await RedisQuotaStore().snapshot(who))["key"][limit]["used"]


async def test_a_busy_key_takes_reservations_made_ahead_without_a_round_trip(
    redis_clock, pipelines
):
    store = RedisQuotaStore()
    who = QuotaSubject("busy", Limits(requests_per_minute=1000, tokens_per_minute=100_000))
    for _ in range(redis_ahead.AFTER):
        await request(store, who)
    await redis_client.flush()
    sent = len(pipelines)
    taken = [store.take_ready(who, tokens=10) for _ in range(redis_ahead.DEPTH)]
    assert all(reservation is not None for reservation in taken)
    assert len(pipelines) == sent  # nothing went to Redis for them
    assert taken[0].headers["x-ratelimit-limit-requests"] == "1000"  # type: ignore[union-attr]
    # Every one of them was counted in Redis before it was handed out.
    assert await used(who) == redis_ahead.AFTER + redis_ahead.DEPTH


async def test_single_requests_leave_nothing_reserved_behind(redis_clock):
    store = RedisQuotaStore()
    who = QuotaSubject("calm", Limits(requests_per_minute=1000))
    for _ in range(redis_ahead.AFTER - 1):
        await request(store, who)
    assert await used(who) == redis_ahead.AFTER - 1


async def test_a_busy_key_gets_exactly_its_limit(redis_clock):
    store = RedisQuotaStore()
    who = QuotaSubject("exact", Limits(requests_per_minute=60))
    admitted = refused = 0
    for _ in range(80):
        try:
            await request(store, who)
        except QuotaExceeded:
            refused += 1
        else:
            admitted += 1
    # Made ahead only while half the limit is free: nothing held back refuses a request.
    assert (admitted, refused) == (60, 20)
    assert await used(who) == 60


async def test_nothing_is_made_ahead_once_half_a_limit_is_used(redis_clock):
    store = RedisQuotaStore()
    who = QuotaSubject("half", Limits(requests_per_minute=1000, tokens_per_minute=1000))
    for _ in range(redis_ahead.AFTER + 20):
        await request(store, who, tokens=30)  # 30 tokens each: half of 1000 after 16
    # Counted in Redis: every request's 30 tokens, plus what is held ahead, which stopped
    # growing once no more than half the tokens were free.
    held = await used(who, "tokens_per_minute") - 30 * (redis_ahead.AFTER + 20)
    assert held == 0


async def test_reservations_made_ahead_are_given_back_when_unused(redis_clock, monkeypatch):
    monkeypatch.setattr(redis_ahead, "IDLE", 0.2)
    store = RedisQuotaStore()
    who = QuotaSubject("idle", Limits(requests_per_minute=1000))
    for _ in range(redis_ahead.AFTER + 1):
        await request(store, who)
    assert await used(who) > redis_ahead.AFTER + 1  # some are held ahead
    # Unused for IDLE seconds: given back.
    await eventually_equal(lambda: used(who), redis_ahead.AFTER + 1)


async def test_a_larger_request_does_not_take_a_smaller_reservation(redis_clock):
    store = RedisQuotaStore()
    who = QuotaSubject("sizes", Limits(tokens_per_minute=1_000_000))
    for _ in range(redis_ahead.AFTER + 1):
        await request(store, who, tokens=10)
    assert store.take_ready(who, tokens=500) is None
    assert store.take_ready(who, tokens=5) is not None


async def test_none_are_used_close_to_the_end_of_their_window(redis_clock, monkeypatch):
    monkeypatch.setattr(redis_ahead, "MARGIN", 61.0)  # every minute ends too soon
    store = RedisQuotaStore()
    who = QuotaSubject("late", Limits(requests_per_minute=1000))
    for _ in range(redis_ahead.AFTER + 2):
        await request(store, who)
    assert store.take_ready(who, tokens=10) is None


async def test_none_are_used_while_redis_is_failing(use_own_redis):
    store = RedisQuotaStore()
    who = QuotaSubject("outage", Limits(requests_per_minute=1000))
    for _ in range(redis_ahead.AFTER + 1):
        await request(store, who)
    use_own_redis.stop()
    with pytest.raises(redis_client.RedisUnreachable):
        await redis_client.command("ping", "PING")
    assert store.take_ready(who, tokens=10) is None
