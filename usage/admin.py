"""The ledger in the admin: the raw rows (read-only) and a usage page with charts and the line."""

from __future__ import annotations

from django.contrib import admin
from django.template.response import TemplateResponse

from usage.charts import column_chart
from usage.models import UsageHourly, UsageRecord
from usage.queues import queue_figures
from usage.selectors import dashboard_data


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "key_prefix",
        "team_name",
        "model",
        "endpoint",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "request_id",
    )
    list_filter = ("status", "model", "endpoint")
    search_fields = ("key_prefix", "team_name", "request_id")
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(UsageHourly)
class UsageDashboardAdmin(ReadOnlyAdmin):
    """Its list page is the usage dashboard (from the hourly rollups)."""

    def changelist_view(self, request, extra_context=None):
        try:
            days = min(90, max(1, int(request.GET.get("days", "14"))))
        except ValueError:
            days = 14
        data = dashboard_data(days=days)
        per_day = data["per_day"]
        charts = [
            column_chart("Requests per day", [(d["label"], d["requests"]) for d in per_day]),
            column_chart("Tokens per day", [(d["label"], d["tokens"]) for d in per_day]),
            column_chart(
                "Server error rate per day (5xx)",
                [(d["label"], d["error_rate"] * 100) for d in per_day],
                fmt="{:.1f}%",
            ),
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage",
            "opts": self.model._meta,
            "days": days,
            "day_choices": (1, 7, 14, 30, 90),
            "charts": charts,
            "tables": [
                ("Per key", data["per_key"]),
                ("Per team", data["per_team"]),
                ("Per model", data["per_model"]),
            ],
            "since": data["since"],
            "queues": queue_figures(),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "usage/dashboard.html", context)
