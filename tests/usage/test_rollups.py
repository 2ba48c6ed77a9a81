import datetime as dt

import pytest

from usage.models import UsageHourly, UsageRecord
from usage.rollups import rollup_usage

NOW = dt.datetime(2026, 11, 26, 10, 30, tzinfo=dt.UTC)


def row(at: dt.datetime, **fields) -> UsageRecord:
    defaults = {"key_prefix": "abcdefgh", "team_name": "research", "model": "small", "status": 200}
    return UsageRecord(created_at=at, **{**defaults, **fields})


@pytest.mark.django_db
def test_rollup_aggregates_by_hour_key_team_and_model_and_is_idempotent():
    UsageRecord.objects.bulk_create(
        [
            row(NOW - dt.timedelta(hours=1), prompt_tokens=10, completion_tokens=5, latency_ms=100),
            row(NOW - dt.timedelta(minutes=59), prompt_tokens=1, completion_tokens=1, status=500),
            row(NOW - dt.timedelta(minutes=50), status=429),
            row(NOW, model="large", prompt_tokens=3),
        ]
    )
    assert rollup_usage(now=NOW)["hours"] == 2
    # The next run recomputes from the last rolled-up hour on, to the same rows.
    assert rollup_usage(now=NOW)["hours"] == 1
    nine = UsageHourly.objects.get(hour=NOW.replace(hour=9, minute=0))
    assert (nine.requests, nine.errors, nine.rejected) == (3, 1, 1)
    assert (nine.prompt_tokens, nine.completion_tokens, nine.latency_ms_total) == (11, 6, 100)
    assert UsageHourly.objects.get(model="large").prompt_tokens == 3
    assert UsageHourly.objects.count() == 2
    # A row arriving later in the current hour is picked up by the next run.
    row(NOW + dt.timedelta(minutes=5), model="large").save()
    rollup_usage(now=NOW)
    assert UsageHourly.objects.get(model="large").requests == 2


@pytest.mark.django_db
def test_retention_deletes_old_raw_rows_after_they_are_rolled_up(settings):
    settings.USAGE_RETENTION_DAYS = 7
    settings.USAGE_ROLLUP_RETENTION_DAYS = 30
    UsageRecord.objects.bulk_create(
        [row(NOW - dt.timedelta(days=8)), row(NOW - dt.timedelta(days=1)), row(NOW)]
    )
    result = rollup_usage(now=NOW)
    assert result["purged_rows"] == 1
    assert UsageRecord.objects.count() == 2
    # The rollup of the deleted row's hour stays (for the dashboard) until its own retention.
    assert UsageHourly.objects.filter(hour__lt=NOW - dt.timedelta(days=7)).count() == 1
    UsageHourly.objects.create(hour=NOW - dt.timedelta(days=40), requests=1)
    assert rollup_usage(now=NOW)["purged_hours"] == 1
    assert UsageHourly.objects.count() == 3
