"""The usage pages' charts and tables: the admin dashboard's, for some keys or one team."""

from __future__ import annotations

from usage.charts import column_chart
from usage.selectors import dashboard_data

DAY_CHOICES = (1, 7, 14, 30, 90)


def usage_context(
    request, *, key_prefixes: list[str] | None = None, team_names: list[str] | None = None
) -> dict:
    try:
        days = min(90, max(1, int(request.GET.get("days", "14"))))
    except ValueError:
        days = 14
    data = dashboard_data(days=days, key_prefixes=key_prefixes, team_names=team_names)
    per_day = data["per_day"]
    return {
        "days": days,
        "day_choices": DAY_CHOICES,
        "since": data["since"],
        "charts": [
            column_chart("Requests per day", [(d["label"], d["requests"]) for d in per_day]),
            column_chart("Tokens per day", [(d["label"], d["tokens"]) for d in per_day]),
        ],
        "tables": [("Per key", data["per_key"]), ("Per model", data["per_model"])],
    }
