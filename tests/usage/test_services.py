import datetime as dt

import pytest
from asgiref.sync import async_to_sync

from accounts.authentication import resolve_key
from limits.stores import get_quota_store
from usage.models import UsageRecord
from usage.rollups import rollup_usage
from usage.services import usage_summary


@pytest.mark.django_db(transaction=True)
def test_summary_shows_the_key_its_limits_remaining_quota_and_usage(make_key):
    created = make_key(name="me", tokens_per_day=1000, requests_per_minute=60)
    principal = resolve_key(created.full_key)
    now = dt.datetime.now(dt.UTC)
    prefix = created.api_key.prefix
    UsageRecord.objects.bulk_create(
        [
            UsageRecord(
                created_at=now - dt.timedelta(hours=2),
                key_prefix=prefix,
                status=200,
                prompt_tokens=10,
                completion_tokens=20,
            ),
            UsageRecord(
                created_at=now, key_prefix=prefix, status=200, prompt_tokens=1, completion_tokens=2
            ),
            UsageRecord(created_at=now, key_prefix="someone", status=200, prompt_tokens=100),
        ]
    )
    rollup_usage(now=now)
    UsageRecord.objects.create(created_at=now, key_prefix=prefix, status=200, prompt_tokens=4)

    async def scenario():
        store = get_quota_store()
        reservation = await store.reserve(principal.quota, tokens=100)
        await store.settle(reservation, used_tokens=40)
        return await usage_summary(principal)

    summary = async_to_sync(scenario)()
    assert summary["key"]["name"] == "me" and summary["key"]["team"] == "research"
    assert summary["key"]["prefix"] == f"llm_{prefix}"
    assert created.full_key not in str(summary)
    day = summary["limits"]["key"]["tokens_per_day"]
    assert (day["limit"], day["used"], day["remaining"]) == (1000, 40, 960)
    assert summary["limits"]["key"]["requests_per_minute"]["remaining"] == 59
    today = summary["usage"]["today"]
    if (now - dt.timedelta(hours=2)).date() == now.date():
        assert today == {
            "requests": 3,
            "prompt_tokens": 15,
            "completion_tokens": 22,
            "total_tokens": 37,
        }
    assert summary["usage"]["this_month"]["requests"] >= today["requests"] >= 2
