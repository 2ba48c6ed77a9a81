"""The Redis quota store answers as the in-process one, with its counters in Redis."""

from __future__ import annotations

import pytest

from limits import quotas, stores
from limits.quotas import Limits, QuotaExceeded, QuotaSubject
from limits.redis_quotas import RedisQuotaStore


def subject(key: Limits, team: Limits | None = None) -> QuotaSubject:
    if team is None:
        return QuotaSubject(key_id="1", key_limits=key)
    return QuotaSubject(key_id="1", key_limits=key, team_id="7", team_limits=team)


async def test_requests_per_minute_refuses_the_third_with_headers(redis_clock):
    # The three calls fall in one minute of the (faked) Redis clock, 15 s into it.
    redis_clock.advance(15)
    store, who = RedisQuotaStore(), subject(Limits(requests_per_minute=2, tokens_per_minute=1000))
    first = await store.reserve(who, tokens=10, now=redis_clock.seconds)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-tokens"] == "990"
    await store.reserve(who, tokens=10, now=redis_clock.seconds)
    with pytest.raises(QuotaExceeded) as refused:
        await store.reserve(who, tokens=10, now=redis_clock.seconds)
    assert refused.value.headers["Retry-After"] == "45"  # the rest of the minute
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert "requests per minute" in refused.value.detail
    redis_clock.advance(45)  # the next minute
    again = await store.reserve(who, tokens=10, now=redis_clock.seconds)
    assert again.headers["x-ratelimit-remaining-requests"] == "1"


async def test_a_second_store_sees_the_same_counters(redis_clock):
    who = subject(Limits(requests_per_minute=1))
    await RedisQuotaStore().reserve(who, tokens=0, now=redis_clock.seconds)
    with pytest.raises(QuotaExceeded):
        await RedisQuotaStore().reserve(who, tokens=0, now=redis_clock.seconds)


async def test_settle_frees_the_concurrency_unit_and_counts_real_tokens(redis_clock):
    store = RedisQuotaStore()
    who = subject(Limits(concurrent_requests=1, tokens_per_minute=100))
    held = await store.reserve(who, tokens=90)
    with pytest.raises(QuotaExceeded) as busy:
        await store.reserve(who, tokens=1)
    assert "concurrent requests" in busy.value.detail
    await store.settle(held, used_tokens=20)
    await store.settle(held, used_tokens=20)  # twice: a no-op
    again = await store.reserve(who, tokens=80)  # 20 + 80 fits in 100 only after settling
    assert again.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_team_limit_binds_every_key_of_the_team(redis_clock):
    store, team = RedisQuotaStore(), Limits(requests_per_minute=1)
    await store.reserve(QuotaSubject("1", team_id="7", team_limits=team), tokens=0)
    with pytest.raises(QuotaExceeded) as refused:
        await store.reserve(QuotaSubject("2", team_id="7", team_limits=team), tokens=0)
    assert "team" in refused.value.detail


async def test_daily_budget_refuses_what_does_not_fit_in_what_is_left(redis_clock):
    store, who = RedisQuotaStore(), subject(Limits(tokens_per_day=100))
    first = await store.reserve(who, tokens=60)
    with pytest.raises(QuotaExceeded) as overrun:
        await store.reserve(who, tokens=60)  # 60 + 60 could overrun 100
    assert "tokens per day" in overrun.value.detail
    await store.settle(first, used_tokens=100)
    with pytest.raises(QuotaExceeded) as spent:
        await store.reserve(who, tokens=0)  # spent: even an empty request
    assert "tokens per day" in spent.value.detail


async def test_unlimited_subjects_never_reach_redis(settings):
    settings.SHARED_LIMITS = {**settings.SHARED_LIMITS, "url": "redis://127.0.0.1:1/0"}
    reservation = await RedisQuotaStore().reserve(QuotaSubject("env0"), tokens=5)
    assert reservation.headers == {}


def test_get_quota_store_picks_redis_when_configured(settings):
    settings.SHARED_LIMITS = {**settings.SHARED_LIMITS, "url": "redis://127.0.0.1:6399/0"}
    assert isinstance(stores.get_quota_store(), RedisQuotaStore)
    settings.SHARED_LIMITS = {**settings.SHARED_LIMITS, "url": ""}
    assert isinstance(stores.get_quota_store(), quotas.InProcessQuotaStore)


async def test_snapshot_reads_the_shared_counts(redis_clock):
    store = RedisQuotaStore()
    who = subject(Limits(requests_per_minute=5, tokens_per_day=1000), Limits(tokens_per_minute=50))
    held = await store.reserve(who, tokens=30)
    await store.settle(held, used_tokens=12)
    snapshot = await RedisQuotaStore().snapshot(who)
    key, team = snapshot["key"], snapshot["team"]
    assert key["requests_per_minute"]["used"] == 1
    assert key["requests_per_minute"]["remaining"] == 4
    assert key["tokens_per_day"]["used"] == 12
    assert team["tokens_per_minute"] == {
        "limit": 50,
        "used": 12,
        "remaining": 38,
        "resets_in_seconds": team["tokens_per_minute"]["resets_in_seconds"],
    }
    assert 1 <= team["tokens_per_minute"]["resets_in_seconds"] <= 61
    assert key["concurrent_requests"]["limit"] is None
