"""Files and batches in OpenAI's shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from batches.models import Batch, StoredFile


def _unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def file_object(found: StoredFile) -> dict[str, Any]:
    return {
        "id": found.id,
        "object": "file",
        "bytes": found.bytes,
        "created_at": _unix(found.created_at),
        "expires_at": _unix(found.expires_at),
        "filename": found.filename,
        "purpose": found.purpose,
        "status": "processed",
        "status_details": None,
    }


def batch_object(batch: Batch, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": batch.errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": batch.output_file_id or None,
        "error_file_id": batch.error_file_id or None,
        "created_at": _unix(batch.created_at),
        "in_progress_at": _unix(batch.in_progress_at),
        "expires_at": _unix(batch.expires_at),
        "finalizing_at": _unix(batch.finalizing_at),
        "completed_at": _unix(batch.completed_at),
        "failed_at": _unix(batch.failed_at),
        "expired_at": _unix(batch.expired_at),
        "cancelling_at": _unix(batch.cancelling_at),
        "cancelled_at": _unix(batch.cancelled_at),
        "request_counts": counts,
        "metadata": batch.metadata,
    }


def page(items: list[dict[str, Any]], *, limit: int) -> dict[str, Any]:
    """OpenAI's cursor page: `items` holds one more than `limit` when there is a next page."""
    shown = items[:limit]
    return {
        "object": "list",
        "data": shown,
        "first_id": shown[0]["id"] if shown else None,
        "last_id": shown[-1]["id"] if shown else None,
        "has_more": len(items) > limit,
    }
