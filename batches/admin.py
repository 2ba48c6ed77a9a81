"""Batches in the admin: their progress (lines finished of all), read-only."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, Q

from batches.models import Batch, BatchLine, StoredFile


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Batch)
class BatchAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "owner_name",
        "endpoint",
        "status",
        "progress",
        "completed_lines",
        "failed_lines",
        "created_at",
        "expires_at",
    )
    list_filter = ("status", "endpoint")
    search_fields = ("id", "owner_name", "input_file_id")
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                done=Count("lines", filter=Q(lines__state=BatchLine.State.DONE)),
                failed=Count("lines", filter=Q(lines__state=BatchLine.State.FAILED)),
            )
        )

    @admin.display(description="Progress")
    def progress(self, batch) -> str:
        finished = batch.done + batch.failed
        percent = 100 * finished // batch.total if batch.total else 100
        return f"{finished} / {batch.total} ({percent}%)"

    @admin.display(description="Completed", ordering="done")
    def completed_lines(self, batch) -> int:
        return batch.done

    @admin.display(description="Failed", ordering="failed")
    def failed_lines(self, batch) -> int:
        return batch.failed


@admin.register(StoredFile)
class StoredFileAdmin(ReadOnlyAdmin):
    list_display = ("id", "owner", "purpose", "filename", "bytes", "created_at")
    list_filter = ("purpose",)
    search_fields = ("id", "filename", "owner")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the bytes on disk go with DELETE /v1/files/{id}
