"""Reading the ledger: totals for one key, and the dashboard's series."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, Max, Sum
from django.db.models.functions import TruncDate

from usage.models import UsageHourly, UsageRecord


def key_totals(*, key_prefix: str, since: dt.datetime) -> dict[str, int]:
    """Requests and tokens of one key since a moment: the rollups, plus raw rows after them."""
    watermark = UsageHourly.objects.aggregate(latest=Max("hour"))["latest"]
    totals = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    raw = UsageRecord.objects.filter(key_prefix=key_prefix, created_at__gte=since)
    if watermark is not None:
        rolled = UsageHourly.objects.filter(
            key_prefix=key_prefix, hour__gte=since, hour__lt=watermark
        ).aggregate(r=Sum("requests"), p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
        totals = {
            "requests": rolled["r"] or 0,
            "prompt_tokens": rolled["p"] or 0,
            "completion_tokens": rolled["c"] or 0,
        }
        raw = raw.filter(created_at__gte=max(since, watermark))
    fresh = raw.aggregate(r=Count("id"), p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
    totals["requests"] += fresh["r"] or 0
    totals["prompt_tokens"] += fresh["p"] or 0
    totals["completion_tokens"] += fresh["c"] or 0
    totals["total_tokens"] = totals["prompt_tokens"] + totals["completion_tokens"]
    return totals


def dashboard_data(
    *,
    days: int,
    now: dt.datetime | None = None,
    key_prefixes: list[str] | None = None,
    team_names: list[str] | None = None,
) -> dict:
    """
    Per day, and per key, team and model, over the last `days` days (from the rollups); only
    the given keys or teams when they are given (the portal's "my usage" and team pages).
    """
    now = now or dt.datetime.now(dt.UTC)
    since = (now - dt.timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = UsageHourly.objects.filter(hour__gte=since)
    if key_prefixes is not None:
        rows = rows.filter(key_prefix__in=key_prefixes)
    if team_names is not None:
        rows = rows.filter(team_name__in=team_names)
    per_day_rows = (
        rows.annotate(day=TruncDate("hour"))
        .values("day")
        .annotate(
            requests=Sum("requests"),
            errors=Sum("errors"),
            rejected=Sum("rejected"),
            tokens=Sum("prompt_tokens") + Sum("completion_tokens"),
        )
        .order_by("day")
    )
    by_day = {row["day"]: row for row in per_day_rows}
    per_day = []
    for offset in range(days):
        day = (since + dt.timedelta(days=offset)).date()
        row = by_day.get(day, {})
        requests = row.get("requests") or 0
        per_day.append(
            {
                "label": day.strftime("%m-%d"),
                "requests": requests,
                "tokens": row.get("tokens") or 0,
                "errors": row.get("errors") or 0,
                "rejected": row.get("rejected") or 0,
                "error_rate": (row.get("errors") or 0) / requests if requests else 0.0,
            }
        )
    return {
        "since": since,
        "per_day": per_day,
        "per_key": _grouped(rows, "key_prefix"),
        "per_team": _grouped(rows, "team_name"),
        "per_model": _grouped(rows, "model"),
    }


def _grouped(rows, field: str, limit: int = 10) -> list[dict]:
    groups = (
        rows.values(field)
        .annotate(
            requests=Sum("requests"),
            errors=Sum("errors"),
            rejected=Sum("rejected"),
            tokens=Sum("prompt_tokens") + Sum("completion_tokens"),
            latency=Sum("latency_ms_total"),
        )
        .order_by("-tokens", "-requests")[:limit]
    )
    result = []
    for group in groups:
        requests = group["requests"] or 0
        label = group[field]
        if field == "key_prefix":
            label = f"llm_{label}_…" if label else "API_KEY (environment)"
        result.append(
            {
                "label": label or "(none)",
                "requests": requests,
                "tokens": group["tokens"] or 0,
                "errors": group["errors"] or 0,
                "rejected": group["rejected"] or 0,
                "error_rate": (group["errors"] or 0) / requests if requests else 0.0,
                "mean_latency_ms": (group["latency"] or 0) / requests if requests else 0.0,
            }
        )
    return result
