"""
The batch lines' leases and the batches' ends, in the database (blocking: run in a thread).

Any number of gateway processes, on any number of hosts, share the work of every batch:

* `claim_lines` takes pending lines (and running lines whose lease ran out: their process
  died) for one process, with a lease until a given time. On PostgreSQL the candidates are
  locked with `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent claims take different lines
  without waiting for each other; on SQLite (one writer at a time) each line is taken by an
  `UPDATE` conditional on it still being claimable.
* `renew_leases` pushes the leases of the lines a process is running forward.
* `finish_line` writes a line's result only if the process still holds its lease: a line is
  finished once, whoever ran it.
* `sweep` ends batches: it expires those past their completion window, gives up the lines a
  stopped batch will not run, and finalizes a batch whose lines are all finished (its output
  and error files, then its final status), taking the batch by a conditional `UPDATE` so one
  process does it (a finalizer that died is replaced after the lease time).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.utils import timezone

from batches import storage
from batches.models import Batch, BatchLine, StoredFile
from batches.services import error_line, new_file_id

OUTPUT_PURPOSE = "batch_output"
END_MESSAGES: dict[str, tuple[str, str]] = {
    Batch.Status.CANCELLED: ("batch_cancelled", "The batch was cancelled before this line ran."),
    Batch.Status.EXPIRED: (
        "batch_expired",
        "The batch's completion window ended before this line ran.",
    ),
    Batch.Status.FAILED: ("batch_failed", "The batch failed before this line ran."),
}
ENDED_AT: dict[str, str] = {
    Batch.Status.COMPLETED: "completed_at",
    Batch.Status.FAILED: "failed_at",
    Batch.Status.CANCELLED: "cancelled_at",
    Batch.Status.EXPIRED: "expired_at",
}
RUNNING_STATUSES = (Batch.Status.IN_PROGRESS, Batch.Status.CANCELLING)


@dataclass(frozen=True, slots=True)
class ClaimedLine:
    id: int
    batch_id: str
    owner: str
    custom_id: str
    url: str
    body: dict[str, Any]
    attempts: int  # this one included


def _claimable(now: datetime) -> Q:
    ready = Q(state=BatchLine.State.PENDING) & (Q(not_before__isnull=True) | Q(not_before__lte=now))
    abandoned = Q(state=BatchLine.State.RUNNING, lease_until__lt=now)
    running = Q(batch__status=Batch.Status.IN_PROGRESS, batch__ending="", batch__expires_at__gt=now)
    return running & (ready | abandoned)


def claim_lines(
    *, worker: str, count: int, lease_seconds: float, skip_batches: frozenset[str] = frozenset()
) -> list[ClaimedLine]:
    """Up to `count` lines for `worker`, oldest batch first, leased for `lease_seconds`."""
    if count <= 0:
        return []
    now = timezone.now()
    until = now + timedelta(seconds=lease_seconds)
    taken = {
        "state": BatchLine.State.RUNNING,
        "lease_owner": worker,
        "lease_until": until,
        "attempts": F("attempts") + 1,
    }
    candidates = BatchLine.objects.filter(_claimable(now)).exclude(batch_id__in=skip_batches)
    if connection.features.has_select_for_update_skip_locked:
        with transaction.atomic():
            ids = list(
                candidates.select_for_update(skip_locked=True, of=("self",))
                .order_by("id")
                .values_list("id", flat=True)[:count]
            )
            BatchLine.objects.filter(id__in=ids).update(**taken)
    else:
        # One statement, so one writer's claim is whole before another's reads (SQLite
        # writes one at a time); the lines are the ones it leased until `until`.
        chosen = candidates.order_by("id").values("id")[:count]
        BatchLine.objects.filter(_claimable(now), id__in=Subquery(chosen)).update(**taken)
        ids = list(
            BatchLine.objects.filter(
                lease_owner=worker, lease_until=until, state=BatchLine.State.RUNNING
            ).values_list("id", flat=True)
        )
    lines = BatchLine.objects.filter(id__in=ids, lease_owner=worker).select_related("batch")
    return [
        ClaimedLine(
            id=line.id,
            batch_id=line.batch_id,
            owner=line.batch.owner,
            custom_id=line.custom_id,
            url=line.url,
            body=line.body or {},
            attempts=line.attempts,
        )
        for line in lines.order_by("id")
    ]


def renew_leases(*, worker: str, ids: list[int], lease_seconds: float) -> int:
    until = timezone.now() + timedelta(seconds=lease_seconds)
    return BatchLine.objects.filter(
        id__in=ids, lease_owner=worker, state=BatchLine.State.RUNNING
    ).update(lease_until=until)


def _held(worker: str, line_id: int):
    return BatchLine.objects.filter(id=line_id, lease_owner=worker, state=BatchLine.State.RUNNING)


def finish_line(*, worker: str, line_id: int, done: bool, result: dict[str, Any]) -> bool:
    """Write the line's result if `worker` still holds it; False when it lost the lease."""
    state = BatchLine.State.DONE if done else BatchLine.State.FAILED
    return bool(
        _held(worker, line_id).update(
            state=state, result=result, finished_at=timezone.now(), lease_until=None
        )
    )


def finish_lines(*, worker: str, results: list[tuple[int, bool, dict[str, Any]]]) -> list[bool]:
    """`finish_line` for several lines in one transaction (one commit for all of them)."""
    with transaction.atomic():
        return [
            finish_line(worker=worker, line_id=line_id, done=done, result=result)
            for line_id, done, result in results
        ]


def release_line(
    *, worker: str, line_id: int, retry_in: float = 0.0, count_attempt: bool = True
) -> bool:
    """Give a line back to be claimed again (after `retry_in` seconds)."""
    not_before = timezone.now() + timedelta(seconds=retry_in) if retry_in > 0 else None
    changes: dict[str, Any] = {
        "state": BatchLine.State.PENDING,
        "lease_owner": "",
        "lease_until": None,
        "not_before": not_before,
    }
    if not count_attempt:
        changes["attempts"] = F("attempts") - 1
    return bool(_held(worker, line_id).update(**changes))


def release_all(*, worker: str, ids: list[int]) -> int:
    """At shutdown: the lines this process was running, back to pending for another."""
    return BatchLine.objects.filter(
        id__in=ids, lease_owner=worker, state=BatchLine.State.RUNNING
    ).update(
        state=BatchLine.State.PENDING,
        lease_owner="",
        lease_until=None,
        attempts=F("attempts") - 1,
    )


def stop_batch(*, batch_id: str, ending: str, code: str, message: str) -> bool:
    """Let no more line of a batch start; it ends with `ending` once its running lines end."""
    errors = {"object": "list", "data": [{"code": code, "message": message, "param": None}]}
    return bool(
        Batch.objects.filter(pk=batch_id, status__in=RUNNING_STATUSES, ending="").update(
            ending=ending, errors=errors
        )
    )


# --- ends ------------------------------------------------------------------------------------


def sweep(*, lease_seconds: float) -> list[str]:
    """Expire, give up and finalize what is due; returns the final statuses this call set."""
    now = timezone.now()
    Batch.objects.filter(status=Batch.Status.IN_PROGRESS, ending="", expires_at__lte=now).update(
        ending=Batch.Status.EXPIRED
    )
    stopped = Batch.objects.filter(status__in=RUNNING_STATUSES).exclude(ending="")
    # Lines a stopped batch will not run (and those of a process that died running them) are
    # given up; their error-file entries are written when the batch is finalized.
    BatchLine.objects.filter(batch__in=stopped).filter(
        Q(state=BatchLine.State.PENDING) | Q(state=BatchLine.State.RUNNING, lease_until__lt=now)
    ).update(state=BatchLine.State.FAILED, result=None, finished_at=now, lease_owner="")
    unfinished = BatchLine.objects.filter(
        batch=OuterRef("pk"), state__in=[BatchLine.State.PENDING, BatchLine.State.RUNNING]
    )
    stale = now - timedelta(seconds=lease_seconds)
    due = Batch.objects.annotate(lines_left=Exists(unfinished)).filter(
        Q(status__in=RUNNING_STATUSES, lines_left=False)
        | Q(status=Batch.Status.FINALIZING, finalizing_at__lt=stale)
    )
    ended = []
    for batch_id, status in list(due.values_list("id", "status")[:20]):
        final = _finalize(batch_id, status, stale)
        if final:
            ended.append(final)
    return ended


def _finalize(batch_id: str, status: str, stale: datetime) -> str:
    """
    Take the batch (one process wins), write its files, then its final status; returns that
    status, or "" when another process has it.
    """
    taken_at = timezone.now()
    took = Batch.objects.filter(pk=batch_id, status=status)
    if status == Batch.Status.FINALIZING:
        took = took.filter(finalizing_at__lt=stale)
    if not took.update(status=Batch.Status.FINALIZING, finalizing_at=taken_at):
        return ""
    batch = Batch.objects.get(pk=batch_id)
    ending = batch.ending or Batch.Status.COMPLETED
    output_id = _write_file(batch, _entries(batch, ending, done=True), "output")
    error_id = _write_file(batch, _entries(batch, ending, done=False), "error")
    ended = Batch.objects.filter(
        pk=batch_id, status=Batch.Status.FINALIZING, finalizing_at=taken_at
    ).update(
        status=ending,
        output_file_id=output_id,
        error_file_id=error_id,
        **{ENDED_AT[ending]: timezone.now()},
    )
    if not ended:  # another process took over a finalizing that looked dead
        for file_id in (output_id, error_id):
            if file_id:
                StoredFile.objects.filter(pk=file_id).delete()
                storage.delete(file_id)
        return ""
    return str(ending)


def _entries(batch: Batch, ending: str, *, done: bool) -> Iterator[bytes]:
    state = BatchLine.State.DONE if done else BatchLine.State.FAILED
    rows = (
        BatchLine.objects.filter(batch=batch, state=state)
        .order_by("index")
        .values_list("custom_id", "result")
    )
    code, message = END_MESSAGES.get(ending, END_MESSAGES[Batch.Status.FAILED])
    for custom_id, result in rows.iterator(chunk_size=500):
        if result is None:  # given up when the batch stopped
            result = error_line(custom_id, code, message)
        yield json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode()


def _write_file(batch: Batch, entries: Iterator[bytes], kind: str) -> str:
    first = next(entries, None)
    if first is None:
        return ""
    file_id = new_file_id()

    def lines() -> Iterator[bytes]:
        yield first
        yield from entries

    size = storage.save_lines(file_id, lines())
    StoredFile.objects.create(
        id=file_id,
        owner=batch.owner,
        purpose=OUTPUT_PURPOSE,
        filename=f"{batch.id}_{kind}.jsonl",
        bytes=size,
    )
    return file_id
