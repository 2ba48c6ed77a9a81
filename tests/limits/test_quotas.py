"""
The quota contract: the in-process store and the Redis store give the same answers for the
same calls and clock (minutes, UTC days and calendar months), each test run against both.
"""

import asyncio
import datetime as dt

import pytest

from limits.quotas import (
    InProcessQuotaStore,
    Limits,
    QuotaExceeded,
    QuotaSubject,
    format_reset,
)
from tests.limits.conftest import TRANSPORTS

# 2026-11-26 10:00:30 UTC: 30 s into a minute.
NOW = dt.datetime(2026, 11, 26, 10, 0, 30, tzinfo=dt.UTC).timestamp()


def key(**limits) -> QuotaSubject:
    return QuotaSubject(key_id="1", key_limits=Limits(**limits), team_id="7")


@pytest.fixture(params=["in-process", *TRANSPORTS])
def store(request):
    if request.param in TRANSPORTS:
        request.getfixturevalue(TRANSPORTS[request.param])
        from limits.redis_quotas import RedisQuotaStore

        return RedisQuotaStore()
    return InProcessQuotaStore()


async def test_requests_per_minute_allows_the_limit_then_refuses_with_headers(store):
    subject = key(requests_per_minute=3)
    for remaining in (2, 1, 0):
        reservation = await store.reserve(subject, tokens=10, now=NOW)
        assert reservation.headers["x-ratelimit-remaining-requests"] == str(remaining)
        await store.settle(reservation, used_tokens=10)
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve(subject, tokens=10, now=NOW)
    error = caught.value
    assert error.status_code == 429
    assert error.headers["Retry-After"] == "30"
    assert error.headers["x-ratelimit-limit-requests"] == "3"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.headers["x-ratelimit-reset-requests"] == "30s"
    assert "3 requests per minute" in error.detail


async def test_the_next_minute_starts_afresh(store):
    subject = key(requests_per_minute=1)
    await store.reserve(subject, tokens=0, now=NOW)
    with pytest.raises(QuotaExceeded):
        await store.reserve(subject, tokens=0, now=NOW + 29)
    await store.reserve(subject, tokens=0, now=NOW + 30)


async def test_tokens_per_minute_counts_the_reservation_at_its_edge(store):
    subject = key(tokens_per_minute=1000)
    first = await store.reserve(subject, tokens=600, now=NOW)
    second = await store.reserve(subject, tokens=400, now=NOW)  # exactly at the limit
    assert second.headers["x-ratelimit-remaining-tokens"] == "0"
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve(subject, tokens=1, now=NOW)
    assert caught.value.headers["x-ratelimit-limit-tokens"] == "1000"
    # Settling from the real usage gives back what was reserved and not used.
    await store.settle(first, used_tokens=100)
    await store.settle(second, used_tokens=100)
    third = await store.reserve(subject, tokens=800, now=NOW)
    assert third.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_a_request_larger_than_the_token_limit_says_so(store):
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve(key(tokens_per_minute=100), tokens=101, now=NOW)
    assert "Lower max_tokens" in caught.value.detail


async def test_concurrent_requests_are_limited_until_one_settles(store):
    subject = key(concurrent_requests=2)
    first = await store.reserve(subject, tokens=1, now=NOW)
    await store.reserve(subject, tokens=1, now=NOW)
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve(subject, tokens=1, now=NOW)
    assert caught.value.headers["Retry-After"] == "1"
    await store.settle(first, used_tokens=1)
    await store.reserve(subject, tokens=1, now=NOW)


async def test_settling_twice_frees_one_slot(store):
    subject = key(concurrent_requests=2)
    first = await store.reserve(subject, tokens=1, now=NOW)
    await store.reserve(subject, tokens=1, now=NOW)
    await store.settle(first, used_tokens=1)
    await store.settle(first, used_tokens=1)
    await store.reserve(subject, tokens=1, now=NOW)
    with pytest.raises(QuotaExceeded):
        await store.reserve(subject, tokens=1, now=NOW)


async def test_daily_budget_refuses_the_next_request_once_spent(store):
    subject = key(tokens_per_day=1000)
    in_flight = await store.reserve(subject, tokens=300, now=NOW)
    # A streamed answer's usage arrives in its last chunk; it is settled after the stream.
    streamed = await store.reserve(subject, tokens=500, now=NOW)
    await store.settle(streamed, used_tokens=900)
    # Spent (300 reserved + 900 used): the next one is refused until midnight UTC ...
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve(subject, tokens=1, now=NOW)
    assert caught.value.retry_after == 14 * 3600 - 30
    assert "tokens per day" in caught.value.detail
    # ... while the request already in flight finishes and settles normally.
    await store.settle(in_flight, used_tokens=50)
    snapshot = await store.snapshot(subject, now=NOW)
    assert snapshot["key"]["tokens_per_day"]["used"] == 950
    assert snapshot["key"]["tokens_per_day"]["remaining"] == 50
    await store.reserve(subject, tokens=10, now=NOW)
    # One that alone could overrun what is left is refused at once.
    with pytest.raises(QuotaExceeded):
        await store.reserve(subject, tokens=41, now=NOW)
    # The next day starts afresh.
    await store.reserve(subject, tokens=1000, now=NOW + 14 * 3600)


async def test_monthly_budget_resets_at_the_start_of_the_next_month(store):
    subject = key(tokens_per_month=100)
    await store.settle(await store.reserve(subject, tokens=0, now=NOW), used_tokens=100)
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve(subject, tokens=0, now=NOW)
    december = dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()
    assert caught.value.retry_after == int(december - NOW)
    await store.reserve(subject, tokens=0, now=december)


async def test_unknown_usage_keeps_the_reservation(store):
    subject = key(tokens_per_minute=100)
    reservation = await store.reserve(subject, tokens=60, now=NOW)
    await store.settle(reservation, used_tokens=None)
    with pytest.raises(QuotaExceeded):
        await store.reserve(subject, tokens=41, now=NOW)


async def test_team_limit_bounds_the_sum_of_its_keys(store):
    team_limits = Limits(requests_per_minute=3)
    alice = QuotaSubject(key_id="1", team_id="7", team_limits=team_limits)
    bob = QuotaSubject(key_id="2", team_id="7", team_limits=team_limits)
    other_team = QuotaSubject(key_id="3", team_id="8", team_limits=team_limits)
    await store.reserve(alice, tokens=0, now=NOW)
    await store.reserve(bob, tokens=0, now=NOW)
    await store.reserve(alice, tokens=0, now=NOW)
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve(bob, tokens=0, now=NOW)
    assert "team's limit" in caught.value.detail
    await store.reserve(other_team, tokens=0, now=NOW)


async def test_a_refused_request_counts_in_no_counter(store):
    """Check and reserve are one step: the key's counters do not move when the team refuses."""
    subject = QuotaSubject(
        key_id="1",
        key_limits=Limits(requests_per_minute=5),
        team_id="7",
        team_limits=Limits(tokens_per_minute=100),
    )
    await store.reserve(subject, tokens=100, now=NOW)
    with pytest.raises(QuotaExceeded):
        await store.reserve(subject, tokens=1, now=NOW)
    snapshot = await store.snapshot(subject, now=NOW)
    assert snapshot["key"]["requests_per_minute"]["used"] == 1


async def test_concurrent_reservations_never_overshoot(store):
    subject = key(requests_per_minute=50)

    async def attempt():
        try:
            await store.reserve(subject, tokens=1, now=NOW)
        except QuotaExceeded:
            return False
        return True

    results = await asyncio.gather(*(attempt() for _ in range(200)))
    assert sum(results) == 50


async def test_unlimited_subject_is_never_refused_and_sends_no_headers(store):
    subject = QuotaSubject(key_id="env0")
    for _ in range(1000):
        reservation = await store.reserve(subject, tokens=10**9, now=NOW)
        await store.settle(reservation, used_tokens=10**9)
    assert reservation.headers == {}


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.2, "1s"), (59, "59s"), (360, "6m0s"), (3723, "1h2m3s")]
)
def test_reset_is_formatted_like_openai(seconds, text):
    assert format_reset(seconds) == text


def test_estimate_reserves_max_tokens_plus_the_prompt():
    from limits.quotas import estimate_request_tokens

    assert estimate_request_tokens(max_tokens=100, prompt_chars=401, messages=2) == 100 + 101 + 8


async def test_a_monthly_budget_is_the_calendar_month_on_every_store(store):
    subject = key(tokens_per_month=100)
    first_of_december = dt.datetime(2026, 12, 1, 0, 0, 5, tzinfo=dt.UTC).timestamp()
    last_of_december = dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    spent = await store.reserve(subject, tokens=50, now=first_of_december)
    await store.settle(spent, used_tokens=100)
    # 30 days and more later, still December: still spent (a 30-day window would have reset).
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve(subject, tokens=1, now=last_of_december)
    assert caught.value.retry_after == 1
    assert "tokens per month" in caught.value.detail
    snapshot = await store.snapshot(subject, now=last_of_december)
    assert snapshot["key"]["tokens_per_month"]["used"] == 100
    # January starts afresh.
    await store.reserve(subject, tokens=100, now=last_of_december + 1)


@pytest.mark.parametrize("scope", ["key", "team"])
async def test_a_refusal_says_whose_limit_and_which_it_is(store, scope):
    limits = Limits(tokens_per_day=30, tokens_per_minute=1000)
    subject = (
        QuotaSubject(key_id="1", key_limits=limits, team_id="7")
        if scope == "key"
        else QuotaSubject(key_id="1", team_id="7", team_limits=limits)
    )
    holder = "API key's" if scope == "key" else "team's"
    await store.reserve(subject, tokens=20, now=NOW)
    with pytest.raises(QuotaExceeded) as spent:
        await store.reserve(subject, tokens=20, now=NOW)
    refused = spent.value
    assert (refused.scope, refused.limit, refused.value) == (scope, "tokens_per_day", 30)
    assert refused.budget and not refused.oversized
    assert refused.detail == f"Rate limit reached: the {holder} limit of 30 tokens per day."
    # A request that alone is more than the limit: it can never pass, only a smaller one.
    with pytest.raises(QuotaExceeded) as too_large:
        await store.reserve(subject, tokens=31, now=NOW)
    assert too_large.value.oversized and too_large.value.limit == "tokens_per_day"
    assert f"more than the {holder} limit of 30 tokens per day" in too_large.value.detail


async def test_a_rate_is_not_a_budget(store):
    subject = key(tokens_per_minute=50, tokens_per_month=10_000)
    await store.reserve(subject, tokens=40, now=NOW)
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve(subject, tokens=20, now=NOW)
    assert (caught.value.scope, caught.value.limit) == ("key", "tokens_per_minute")
    assert not caught.value.budget
    await store.reserve(subject, tokens=20, now=NOW + 60)
    spent = QuotaSubject(key_id="2", key_limits=Limits(tokens_per_month=10))
    await store.settle(await store.reserve(spent, tokens=0, now=NOW), used_tokens=10)
    with pytest.raises(QuotaExceeded) as month:
        await store.reserve(spent, tokens=0, now=NOW)
    assert (month.value.limit, month.value.budget) == ("tokens_per_month", True)
