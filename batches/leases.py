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

from django.db import connection
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from batches import storage
from batches.models import Batch, BatchLine, StoredFile
from batches.services import error_line, file_expiry, new_file_id

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


# A claim and a write of results are the runner's statements for every line, so they are
# written out in SQL: one statement each, with none of the ORM's per-query work (which, in
# the runner's database thread, would take the interpreter from the event loop serving
# requests). A line is claimable while its batch runs, when it is pending (past its retry's
# back-off) or its lease ran out.
_CLAIMABLE_SQL = """
    b.status = %(in_progress)s AND b.ending = '' AND b.expires_at > %(now)s
    AND (
        (l.state = %(pending)s AND (l.not_before IS NULL OR l.not_before <= %(now)s))
        OR (l.state = %(running)s AND l.lease_until < %(now)s)
    )
"""
_CLAIM_SQLITE = """
    UPDATE {line} SET state = %(running)s, lease_owner = %(worker)s, lease_until = %(until)s,
        attempts = attempts + 1
    WHERE id IN (
        SELECT l.id FROM {line} l JOIN {batch} b ON b.id = l.batch_id
        WHERE {claimable} {skip} ORDER BY l.id LIMIT %(count)s
    )
    RETURNING id, batch_id, custom_id, url, body, attempts
"""
_CLAIM_LOCKING = """
    WITH chosen AS (
        SELECT l.id FROM {line} l JOIN {batch} b ON b.id = l.batch_id
        WHERE {claimable} {skip} ORDER BY l.id LIMIT %(count)s
        FOR UPDATE OF l SKIP LOCKED
    )
    UPDATE {line} SET state = %(running)s, lease_owner = %(worker)s, lease_until = %(until)s,
        attempts = {line}.attempts + 1
    FROM chosen WHERE {line}.id = chosen.id
    RETURNING {line}.id, {line}.batch_id, {line}.custom_id, {line}.url, {line}.body,
        {line}.attempts
"""
# Batch id -> owner, which never changes: a claim reads the owners of batches it has not seen.
_owners: dict[str, str] = {}
OWNERS_KEPT = 1000


def _sql(template: str, **parts: str) -> str:
    quote = connection.ops.quote_name
    return template.format(
        line=quote(BatchLine._meta.db_table), batch=quote(Batch._meta.db_table), **parts
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def claim_lines(
    *, worker: str, count: int, lease_seconds: float, skip_batches: frozenset[str] = frozenset()
) -> list[ClaimedLine]:
    """Up to `count` lines for `worker`, oldest batch first, leased for `lease_seconds`."""
    if count <= 0:
        return []
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    params: dict[str, Any] = {
        "now": adapt(now),
        "until": adapt(now + timedelta(seconds=lease_seconds)),
        "worker": worker,
        "count": count,
        "in_progress": Batch.Status.IN_PROGRESS,
        "pending": BatchLine.State.PENDING,
        "running": BatchLine.State.RUNNING,
    }
    skip = ""
    if skip_batches:
        names = [f"skip{n}" for n in range(len(skip_batches))]
        params.update(zip(names, sorted(skip_batches), strict=True))
        skip = "AND l.batch_id NOT IN ({})".format(", ".join(f"%({n})s" for n in names))
    # On PostgreSQL the candidates are locked and skipped by concurrent claims; SQLite writes
    # one statement at a time, so its claim is whole before another's reads.
    locking = connection.features.has_select_for_update_skip_locked
    sql = _sql(
        _CLAIM_LOCKING if locking else _CLAIM_SQLITE,
        claimable=_CLAIMABLE_SQL,
        skip=skip,
    )
    with connection.cursor() as cursor:  # one statement: its own transaction
        cursor.execute(sql, params)
        rows = sorted(cursor.fetchall())
    unknown = {row[1] for row in rows} - _owners.keys()
    if unknown:
        if len(_owners) > OWNERS_KEPT:
            _owners.clear()
        _owners.update(Batch.objects.filter(pk__in=unknown).values_list("id", "owner"))
    return [
        ClaimedLine(
            id=line_id,
            batch_id=batch_id,
            owner=_owners.get(batch_id, ""),
            custom_id=custom_id,
            url=url,
            body=_json(body) or {},
            attempts=attempts,
        )
        for line_id, batch_id, custom_id, url, body, attempts in rows
    ]


def renew_leases(*, worker: str, ids: list[int], lease_seconds: float) -> int:
    until = timezone.now() + timedelta(seconds=lease_seconds)
    return BatchLine.objects.filter(
        id__in=ids, lease_owner=worker, state=BatchLine.State.RUNNING
    ).update(lease_until=until)


def finish_line(*, worker: str, line_id: int, done: bool, result: dict[str, Any]) -> bool:
    """Write the line's result if `worker` still holds it; False when it lost the lease."""
    return finish_lines(worker=worker, results=[(line_id, done, result)])[0]


_FINISH = """
    UPDATE {line} SET
        state = CASE WHEN id IN ({done}) THEN %(done)s ELSE %(failed)s END,
        result = CASE id {results} END,
        finished_at = %(now)s, lease_until = NULL
    WHERE id IN ({ids}) AND lease_owner = %(worker)s AND state = %(running)s
    RETURNING id
"""


def finish_lines(*, worker: str, results: list[tuple[int, bool, dict[str, Any]]]) -> list[bool]:
    """
    `finish_line` for several lines in one statement (one commit for all of them): whether
    each was written.
    """
    if not results:
        return []
    field = BatchLine._meta.get_field("result")
    params: dict[str, Any] = {
        "worker": worker,
        "running": BatchLine.State.RUNNING,
        "done": BatchLine.State.DONE,
        "failed": BatchLine.State.FAILED,
        "now": connection.ops.adapt_datetimefield_value(timezone.now()),
    }
    whens = []
    for n, (line_id, _, result) in enumerate(results):
        params[f"id{n}"] = line_id
        params[f"result{n}"] = field.get_db_prep_value(result, connection)
        whens.append(f"WHEN %(id{n})s THEN %(result{n})s")
    ids = ", ".join(f"%(id{n})s" for n in range(len(results)))
    done = ", ".join(f"%(id{n})s" for n, (_, ok, _) in enumerate(results) if ok) or "NULL"
    sql = _sql(_FINISH, done=done, results=" ".join(whens), ids=ids)
    with connection.cursor() as cursor:  # one statement: its own transaction
        cursor.execute(sql, params)
        written = {row[0] for row in cursor.fetchall()}
    return [line_id in written for line_id, _, _ in results]


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
    held = BatchLine.objects.filter(id=line_id, lease_owner=worker, state=BatchLine.State.RUNNING)
    return bool(held.update(**changes))


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


def stop_batch(*, batch_id: str, ending: str, code: str, message: str, **details: Any) -> bool:
    """
    Let no more line of a batch start; it ends with `ending` once its running lines end, its
    `errors` saying why (`code`, `message` and any `details`, such as the limit reached).
    """
    error = {"code": code, "message": message, "param": None, **details}
    errors = {"object": "list", "data": [error]}
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
    # Only the batches that may be due (by the status index): not the ended ones, however many.
    open_batches = Batch.objects.filter(status__in=(*RUNNING_STATUSES, Batch.Status.FINALIZING))
    due = open_batches.annotate(lines_left=Exists(unfinished)).filter(
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
    now = timezone.now()
    StoredFile.objects.create(
        id=file_id,
        owner=batch.owner,
        purpose=OUTPUT_PURPOSE,
        filename=f"{batch.id}_{kind}.jsonl",
        bytes=size,
        created_at=now,
        expires_at=file_expiry(now),
    )
    return file_id
