"""
Files and batches: uploads, the check of every line before a batch starts, cancellation, and
the deletion of expired files.

Blocking database and disk work; the views run each call in a worker thread
(`infra.database.in_database_thread`). The runner's side (claiming, running and finishing
lines) is in `batches.runner`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import IO, Any

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from batches import storage
from batches.dispatch import ENDPOINTS, InvalidLine, check_body
from batches.exceptions import FileRefused, NotFound, StorageFull
from batches.models import Batch, BatchLine, StoredFile
from infra.json_depth import json_depth

INPUT_PURPOSE = "batch"
COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}
MAX_METADATA_PAIRS = 16
MAX_CUSTOM_ID = 512
# Lines inserted per statement when a batch is created, and the bodies' bytes held at once.
INSERT_LINES = 500
INSERT_BYTES = 8 * 1024 * 1024
# Line errors listed in a failed batch's `errors` (all of them are in its error file).
LISTED_ERRORS = 20
# A `.part` file (an upload or a result being written) untouched this long was left by a crash.
STALE_PART_SECONDS = 24 * 3600


FILE_ID = re.compile(r"file-[0-9a-f]{24}")
BATCH_ID = re.compile(r"batch_[0-9a-f]{24}")
# Control characters (NUL among them) are dropped from a file's name.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex[:24]}"


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex[:24]}"


def new_request_id() -> str:
    return f"batch_req_{uuid.uuid4().hex[:24]}"


# --- files -----------------------------------------------------------------------------------


def file_expiry(created_at: datetime) -> datetime | None:
    """When a file made at `created_at` expires (BATCHES__FILES_EXPIRE_DAYS; None: never)."""
    days = settings.BATCHES["files_expire_days"]
    return created_at + timedelta(days=days) if days > 0 else None


def live_files(owner: str) -> QuerySet[StoredFile]:
    """The key's files that have not expired (an expired one is gone before it is deleted)."""
    return StoredFile.objects.filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()), owner=owner
    )


def stored_bytes(owner: str) -> int:
    return live_files(owner).aggregate(total=Sum("bytes"))["total"] or 0


def check_storage(owner: str, adding: int) -> None:
    limit = settings.BATCHES["max_bytes_per_key"]
    if limit and stored_bytes(owner) + adding > limit:
        raise StorageFull(
            f"This key's files would take more than {limit} bytes (BATCHES__MAX_BYTES_PER_KEY); "
            "delete some with DELETE /v1/files/{file_id}."
        )


def create_file(*, owner: str, upload: Any, filename: str, purpose: str) -> StoredFile:
    """Store an uploaded batch input after a first look at its content (JSONL, not empty)."""
    if purpose != INPUT_PURPOSE:
        raise FileRefused("purpose", f"Only purpose '{INPUT_PURPOSE}' is accepted here.")
    size = upload.size
    if size > settings.BATCHES["max_file_bytes"]:
        raise FileRefused(
            "file", f"The file is larger than {settings.BATCHES['max_file_bytes']} bytes."
        )
    check_storage(owner, size)
    upload.seek(0)
    _check_looks_like_jsonl(upload)
    upload.seek(0)
    file_id = new_file_id()
    size = storage.save_stream(file_id, upload)
    now = timezone.now()
    return StoredFile.objects.create(
        id=file_id,
        owner=owner,
        purpose=purpose,
        filename=CONTROL_CHARACTERS.sub("", filename)[:255] or "batch.jsonl",
        bytes=size,
        created_at=now,
        expires_at=file_expiry(now),
    )


def _check_looks_like_jsonl(source: IO[bytes]) -> None:
    """The first request line is a JSON object (each line is checked when a batch starts)."""
    for index, line in iter_lines(source, settings.BATCHES["max_line_bytes"]):
        if line is None:
            return  # too long: an error-file entry when a batch uses the file
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise FileRefused(
                "file",
                f"Line {index + 1} is not a JSON object: a batch file is JSONL, one request "
                "per line.",
            )
        return
    raise FileRefused("file", "The file holds no request: a batch file is JSONL, one per line.")


def iter_lines(source: IO[bytes], limit: int) -> Iterator[tuple[int, bytes | None]]:
    """
    The non-blank lines of a file with their number (from 0), each read with at most `limit`
    bytes in memory; a longer line is skipped to its end and given as None.
    """
    index = -1
    while True:
        line = source.readline(limit + 1)
        if not line:
            return
        index += 1
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := source.readline(storage.CHUNK_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield index, None
        elif line.strip():
            yield index, line


def _own_file(owner: str, file_id: str) -> StoredFile | None:
    if not FILE_ID.fullmatch(file_id):
        return None  # not an id the gateway makes (and never sent to the database)
    return live_files(owner).filter(pk=file_id).first()


def get_file(*, owner: str, file_id: str) -> StoredFile:
    found = _own_file(owner, file_id)
    if found is None:
        raise NotFound(f"No file with id {file_id[:60]!r}.")
    return found


def list_files(*, owner: str, purpose: str | None, limit: int, after: str | None):
    files = live_files(owner)
    if purpose:
        files = files.filter(purpose=purpose)
    if after and FILE_ID.fullmatch(after):
        anchor = files.filter(pk=after).first()
        if anchor is not None:
            files = files.filter(created_at__lte=anchor.created_at).exclude(pk=anchor.pk)
    return list(files.order_by("-created_at", "-pk")[: limit + 1])


def delete_file(*, owner: str, file_id: str) -> str:
    found = get_file(owner=owner, file_id=file_id)
    deleted = found.id  # `delete` clears the instance's primary key
    found.delete()
    storage.delete(deleted)
    return deleted


def clean_files() -> int:
    """
    What the runners do now and then: delete expired files, and the `.part` files of uploads
    a crash cut short (untouched for STALE_PART_SECONDS). Returns how many files went.
    """
    return delete_expired_files() + storage.remove_stale_parts(older_than=STALE_PART_SECONDS)


def delete_expired_files(*, limit: int = 500) -> int:
    """
    Delete up to `limit` expired files, their bytes first (a file whose row is left is
    deleted at the next call; bytes without a row would be kept for ever); returns how many.
    """
    now = timezone.now()
    expired = list(
        StoredFile.objects.filter(expires_at__lte=now).values_list("id", flat=True)[:limit]
    )
    for file_id in expired:
        storage.delete(file_id)
    StoredFile.objects.filter(pk__in=expired).delete()
    return len(expired)


# --- batches ---------------------------------------------------------------------------------


def create_batch(
    *,
    owner: str,
    owner_name: str,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: dict[str, str] | None,
) -> Batch:
    """
    Check every line of the input file and store the batch with its lines, in one transaction:
    a batch is either stored whole, ready to run, or not at all. An invalid line is stored
    failed, with its error-file entry; a batch without one valid line fails at once.
    """
    if endpoint not in ENDPOINTS:
        raise FileRefused("endpoint", f"Supported endpoints: {', '.join(sorted(ENDPOINTS))}.")
    if completion_window not in COMPLETION_WINDOWS:
        raise FileRefused("completion_window", "Supported: " + ", ".join(COMPLETION_WINDOWS))
    _check_metadata(metadata)
    source = _own_file(owner, input_file_id)
    if source is None:
        raise FileRefused("input_file_id", f"No file with id {input_file_id[:60]!r}.")
    if source.purpose != INPUT_PURPOSE:
        raise FileRefused("input_file_id", f"The file's purpose is not '{INPUT_PURPOSE}'.")
    now = timezone.now()
    batch = Batch(
        id=new_batch_id(),
        owner=owner,
        owner_name=owner_name[:100],
        endpoint=endpoint,
        input_file_id=source.id,
        completion_window=completion_window,
        status=Batch.Status.IN_PROGRESS,
        metadata=metadata,
        created_at=now,
        in_progress_at=now,
        expires_at=now + COMPLETION_WINDOWS[completion_window],
    )
    with transaction.atomic():
        batch.save(force_insert=True)
        valid, errors = _store_lines(batch, source.id)
        if not valid:
            batch.ending = Batch.Status.FAILED
            batch.errors = {"object": "list", "data": errors}
        batch.save(update_fields=["total", "ending", "errors"])
    return batch


def _store_lines(batch: Batch, file_id: str) -> tuple[int, list[dict[str, Any]]]:
    """Insert the lines of the input file; returns the valid ones' count and listed errors."""
    pending: list[BatchLine] = []
    held = valid = 0
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    max_lines = settings.BATCHES["max_lines"]
    with storage.open_file(file_id) as source:
        for count, (index, raw) in enumerate(
            iter_lines(source, settings.BATCHES["max_line_bytes"]), start=1
        ):
            if count > max_lines:
                raise FileRefused(
                    "input_file_id",
                    f"The file holds more than {max_lines} requests (BATCHES__MAX_LINES).",
                )
            line = _checked_line(batch, index, raw, seen)
            if line.state == BatchLine.State.PENDING:
                valid += 1
            elif len(errors) < LISTED_ERRORS:
                error = (line.result or {}).get("error") or {}
                errors.append({**error, "param": None, "line": index + 1})
            pending.append(line)
            held += len(raw or b"")
            if len(pending) >= INSERT_LINES or held >= INSERT_BYTES:
                BatchLine.objects.bulk_create(pending)
                pending, held = [], 0
            batch.total = count
    if pending:
        BatchLine.objects.bulk_create(pending)
    if not batch.total:
        raise FileRefused("input_file_id", "The file holds no request.")
    return valid, errors


def _checked_line(batch: Batch, index: int, raw: bytes | None, seen: set[str]) -> BatchLine:
    custom_id = ""
    try:
        if raw is None:
            raise InvalidLine(
                "line_too_long",
                f"The line is longer than {settings.BATCHES['max_line_bytes']} bytes "
                "(BATCHES__MAX_LINE_BYTES).",
            )
        request = _parsed_line(raw)
        found = request.get("custom_id")
        if not isinstance(found, str) or not found or len(found) > MAX_CUSTOM_ID:
            raise InvalidLine(
                "invalid_custom_id",
                f"custom_id: a string of 1 to {MAX_CUSTOM_ID} characters is required.",
            )
        custom_id = found
        if custom_id in seen:
            raise InvalidLine("duplicate_custom_id", "custom_id: used by an earlier line.")
        seen.add(custom_id)
        if request.get("method", "POST") != "POST":
            raise InvalidLine("invalid_method", "method: only POST is supported.")
        url = request.get("url")
        if url not in ENDPOINTS:
            raise InvalidLine("invalid_url", f"url: supported are {', '.join(sorted(ENDPOINTS))}.")
        if url != batch.endpoint:
            raise InvalidLine(
                "mismatched_endpoint", f"url: this batch's endpoint is {batch.endpoint}."
            )
        body = check_body(url, request.get("body"))
    except InvalidLine as exc:
        return BatchLine(
            batch=batch,
            index=index,
            custom_id=custom_id,
            url="",
            body=None,
            state=BatchLine.State.FAILED,
            result=error_line(custom_id, exc.code, exc.message),
            finished_at=timezone.now(),
        )
    return BatchLine(batch=batch, index=index, custom_id=custom_id, url=url, body=body)


def _parsed_line(raw: bytes) -> dict[str, Any]:
    """A line's JSON object: never deeper than SERVER__MAX_JSON_DEPTH, no NUL in a string."""
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidLine("invalid_json_line", "The line is not valid JSON.") from None
    if not isinstance(request, dict):
        raise InvalidLine("invalid_json_line", "The line is not a JSON object.")
    limit = settings.SERVER_MAX_JSON_DEPTH
    if json_depth(request, limit) > limit:
        raise InvalidLine(
            "invalid_json_line",
            f"The line nests more than {limit} levels deep (SERVER__MAX_JSON_DEPTH).",
        )
    if _holds_nul(request):
        raise InvalidLine("invalid_json_line", "The line holds a NUL character (\\u0000).")
    return request


def _holds_nul(value: Any) -> bool:
    """Whether a key or string anywhere in `value` holds a NUL (no database stores one)."""
    pending = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return False


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_PAIRS:
        raise FileRefused("metadata", f"At most {MAX_METADATA_PAIRS} string pairs.")
    for key, value in metadata.items():
        if not isinstance(value, str) or len(key) > 64 or len(value) > 512:
            raise FileRefused("metadata", "Keys of at most 64, values of at most 512 characters.")
        if "\x00" in key or "\x00" in value:
            raise FileRefused("metadata", "A NUL character (\\u0000) is not accepted.")


def error_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    """An error-file entry for a line that was not run."""
    return {
        "id": new_request_id(),
        "custom_id": custom_id or None,
        "response": None,
        "error": {"code": code, "message": message},
    }


def get_batch(*, owner: str, batch_id: str) -> Batch:
    found = (
        Batch.objects.filter(owner=owner, pk=batch_id).first()
        if BATCH_ID.fullmatch(batch_id)
        else None
    )
    if found is None:
        raise NotFound(f"No batch with id {batch_id[:60]!r}.")
    return found


def list_batches(*, owner: str, limit: int, after: str | None) -> list[Batch]:
    batches = Batch.objects.filter(owner=owner)
    if after and BATCH_ID.fullmatch(after):
        anchor = batches.filter(pk=after).first()
        if anchor is not None:
            batches = batches.filter(created_at__lte=anchor.created_at).exclude(pk=anchor.pk)
    return list(batches.order_by("-created_at", "-pk")[: limit + 1])


def cancel_batch(*, owner: str, batch_id: str) -> Batch:
    """
    Stop a batch: no line starts any more, lines running finish, and the batch ends
    `cancelled` with the results so far (the runner finishes it).
    """
    batch = get_batch(owner=owner, batch_id=batch_id)
    now = timezone.now()
    Batch.objects.filter(
        pk=batch.pk, status__in=[Batch.Status.VALIDATING, Batch.Status.IN_PROGRESS]
    ).update(status=Batch.Status.CANCELLING, cancelling_at=now, ending=Batch.Status.CANCELLED)
    batch.refresh_from_db()
    return batch


def request_counts(batch: Batch) -> dict[str, int]:
    rows = BatchLine.objects.filter(batch=batch).values("state").annotate(n=Count("id"))
    states = {row["state"]: row["n"] for row in rows}
    return {
        "total": batch.total,
        "completed": states.get(BatchLine.State.DONE, 0),
        "failed": states.get(BatchLine.State.FAILED, 0),
    }
