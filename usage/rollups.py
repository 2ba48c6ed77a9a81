"""
Hourly rollups of the ledger, and retention. Run by the ledger's writer every
`USAGE__ROLLUP_INTERVAL` seconds and by `manage.py rollup_usage`.

Each run recomputes every hour from the last rolled-up one (which may have been partial) up
to now, from the raw rows, inside one transaction: running it twice gives the same rows.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import TruncHour

from usage.models import UsageHourly, UsageRecord

# An arbitrary constant naming the rollup's PostgreSQL advisory lock.
ROLLUP_LOCK_ID = 7_341_902_118


def rollup_usage(*, now: dt.datetime | None = None) -> dict[str, int]:
    now = now or dt.datetime.now(dt.UTC)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Every worker's writer runs rollups: one at a time (SQLite serializes writers).
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ROLLUP_LOCK_ID])
        start = UsageHourly.objects.aggregate(latest=Max("hour"))["latest"]
        if start is None:
            start = UsageRecord.objects.aggregate(first=Min("created_at"))["first"]
        rolled = 0
        if start is not None:
            start = start.replace(minute=0, second=0, microsecond=0)
            groups = (
                UsageRecord.objects.filter(created_at__gte=start)
                .annotate(hour=TruncHour("created_at"))
                .values("hour", "key_prefix", "team_name", "model")
                .annotate(
                    n=Count("id"),
                    n_rejected=Count("id", filter=Q(status__gte=400, status__lt=500)),
                    n_errors=Count("id", filter=Q(status__gte=500)),
                    prompt=Sum("prompt_tokens"),
                    completion=Sum("completion_tokens"),
                    latency=Sum("latency_ms"),
                )
                .order_by()
            )
            rows = [
                UsageHourly(
                    hour=group["hour"],
                    key_prefix=group["key_prefix"],
                    team_name=group["team_name"],
                    model=group["model"],
                    requests=group["n"],
                    rejected=group["n_rejected"],
                    errors=group["n_errors"],
                    prompt_tokens=group["prompt"] or 0,
                    completion_tokens=group["completion"] or 0,
                    latency_ms_total=group["latency"] or 0.0,
                )
                for group in groups
            ]
            UsageHourly.objects.filter(hour__gte=start).delete()
            UsageHourly.objects.bulk_create(rows)
            rolled = len(rows)
    purged = apply_retention(now=now)
    return {"hours": rolled, **purged}


def apply_retention(*, now: dt.datetime) -> dict[str, int]:
    """Delete raw rows older than USAGE__RETENTION_DAYS, rollups older than theirs."""
    raw_cutoff = now - dt.timedelta(days=settings.USAGE_RETENTION_DAYS)
    rollup_cutoff = now - dt.timedelta(days=settings.USAGE_ROLLUP_RETENTION_DAYS)
    # Raw rows of an hour that is not rolled up yet are kept until it is.
    latest = UsageHourly.objects.aggregate(latest=Max("hour"))["latest"]
    if latest is not None:
        raw_cutoff = min(raw_cutoff, latest)
    else:
        raw_cutoff = min(raw_cutoff, now - dt.timedelta(days=365 * 100))
    raw, _ = UsageRecord.objects.filter(created_at__lt=raw_cutoff).delete()
    hourly, _ = UsageHourly.objects.filter(hour__lt=rollup_cutoff).delete()
    return {"purged_rows": raw, "purged_hours": hourly}
