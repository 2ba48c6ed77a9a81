"""The audit log in the admin: searchable, filterable, and never editable."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html

from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("at", "actor_name", "ip", "action", "object_repr", "team_name")
    list_filter = ("action", "object_type")
    search_fields = ("actor_name", "action", "object_repr", "object_id", "team_name", "ip")
    date_hierarchy = "at"
    show_full_result_count = False
    fields = (
        "at",
        "actor_name",
        "ip",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "team_name",
        "request_id",
        "before_json",
        "after_json",
    )
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Before")
    def before_json(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.before, indent=2, sort_keys=True))

    @admin.display(description="After")
    def after_json(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.after, indent=2, sort_keys=True))
