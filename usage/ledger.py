"""
The usage ledger's writer: one row per request, written in batches off the request path.

`record(...)` appends a tuple to a bounded deque and returns: O(1), no lock, no thread hop,
no I/O (well under a microsecond). A background thread with its own database connection
drains the deque every `USAGE__FLUSH_INTERVAL` seconds (sooner when a batch is full) with
`bulk_create`, writes the keys' last-used times once a minute, and runs the hourly rollups
and retention every `USAGE__ROLLUP_INTERVAL` seconds. A failed write is retried with the
rows kept in order. If the deque is full (the database is down or too slow for long) the
row is counted in `dropped` and a warning is logged at most every 10 s; the request is never
blocked. `flush_and_stop()` (from the ASGI lifespan shutdown) writes what is left.

A crash cannot run that shutdown: with the write-ahead journal (`usage.journal`, on by
default) each row is also appended to a file, so a killed process loses at most
`USAGE__JOURNAL_FLUSH_ROWS - 1` rows and none older than `USAGE__JOURNAL_FLUSH_MS`; the next
process to start writes the rest. The journal starts with the writer thread (the ASGI
lifespan), never for a process that only records.

A thread, not an asyncio task: a task would need a thread hop per batch anyway (the ORM is
sync) and would share the event loop with requests while it builds model objects.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Field

from infra.runtime import get_runtime
from observability import metrics
from usage.journal import LedgerJournal, Segment, replay_orphans

logger = logging.getLogger(__name__)

# Order of the fields in a queued row.
FIELDS = (
    "created_at",
    "key_id",
    "key_prefix",
    "team_name",
    "model",
    "replica",
    "endpoint",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "ttft_ms",
    "request_id",
)
LAST_USED_INTERVAL = 60.0
DROP_LOG_INTERVAL = 10.0


class LedgerWriter:
    def __init__(
        self,
        *,
        max_queue: int,
        batch_size: int,
        flush_interval: float,
        rollup_interval: float,
        journal: Callable[[], LedgerJournal | None] | None = None,
    ) -> None:
        self.max_queue = max_queue
        # Makes the journal when the writer starts (None: no journal).
        self._make_journal = journal
        self.journal: LedgerJournal | None = None
        self._lock = threading.Lock()  # record() and the journal's rotation, when journaling
        self._retry: tuple[list[Segment], int] | None = None
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.rollup_interval = rollup_interval
        self.queue: collections.deque[tuple] = collections.deque()
        self.dropped = 0
        self.written = 0
        self._dropped_logged = 0
        self._last_drop_log = 0.0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- the request path -------------------------------------------------------------------

    def record(
        self,
        *,
        principal: Any = None,
        model: str = "",
        replica: str = "",
        endpoint: str = "",
        status: int,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        latency_ms: float = 0.0,
        ttft_ms: float | None = None,
        request_id: str = "",
        created_at: float | None = None,
    ) -> bool:
        """
        Queue one request's row (and journal it). Never waits on the database; returns False
        when the row was dropped.
        """
        queue = self.queue
        if len(queue) >= self.max_queue:
            self._count_drop()
            return False
        row = (
            time.time() if created_at is None else created_at,
            getattr(principal, "key_id", None),
            getattr(principal, "prefix", ""),
            getattr(principal, "team_name", ""),
            model,
            replica,
            endpoint,
            status,
            prompt_tokens or 0,
            completion_tokens or 0,
            latency_ms,
            ttft_ms,
            request_id,
        )
        journal = self.journal
        if journal is None:
            queue.append(row)
        else:
            # The journal's rotation must see each row in both places or in neither.
            with self._lock:
                queue.append(row)
                journal.append(row)
        if len(queue) == self.batch_size:
            self._wake.set()
        return True

    def _count_drop(self) -> None:
        self.dropped += 1
        metrics.record_ledger_drop()
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL:
            self._last_drop_log = now
            logger.warning(
                "Usage ledger queue full (%d rows): %d rows dropped so far",
                self.max_queue,
                self.dropped,
            )

    # --- the writer thread ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self.start_journal()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="usage-ledger", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write everything queued, then end the thread (blocking)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.queue:
            logger.error("Usage ledger stopped with %d rows unwritten", len(self.queue))

    async def flush_and_stop(self, grace: float = 30.0) -> None:
        await asyncio.to_thread(self.stop, grace)

    def _run(self) -> None:
        last_rollup = last_used = last_write = time.monotonic()
        failures = 0
        journal = self.journal
        # With a journal the thread also wakes to write it every FLUSH_MS.
        tick = (
            self.flush_interval
            if journal is None
            else min(self.flush_interval, journal.flush_seconds)
        )
        try:
            if journal is not None:
                self._periodic("journal replay", lambda: self.replay(journal.directory))
            while True:
                woken = self._wake.wait(tick)
                self._wake.clear()
                if journal is not None:
                    with self._lock:
                        journal.flush()
                    now = time.monotonic()
                    if not (woken or self._stopping or now - last_write >= self.flush_interval):
                        continue
                    last_write = now
                metrics.set_ledger_queue_depth(len(self.queue))  # the backlog at each wake
                if self.write_pending():
                    failures = 0
                else:
                    failures += 1
                    if self._stopping and failures >= 5:
                        break
                    time.sleep(min(5.0, 0.2 * 2**failures))
                    continue
                now = time.monotonic()
                if self._stopping or now - last_used >= LAST_USED_INTERVAL:
                    last_used = now
                    self._periodic("last-used times", _flush_last_used)
                if now - last_rollup >= self.rollup_interval:
                    last_rollup = now
                    self._periodic("rollup", _rollup)
                if self._stopping and not self.queue:
                    break
        finally:
            connection.close()

    def _periodic(self, what: str, job) -> None:
        try:
            job()
        except DatabaseError:
            logger.exception("Usage ledger: %s failed", what)
            close_old_connections()

    def write_pending(self) -> bool:
        """Write every queued row in batches; False (rows kept, in order) if the database fails."""
        if self.journal is not None:
            return self._write_journaled(self.journal)
        queue = self.queue
        while queue:
            batch: list[tuple] = []
            while queue and len(batch) < self.batch_size:
                batch.append(queue.popleft())
            try:
                _insert(batch)
            except DatabaseError:
                logger.exception("Usage ledger: writing %d rows failed; will retry", len(batch))
                queue.extendleft(reversed(batch))
                close_old_connections()
                return False
            self.written += len(batch)
        return True

    def _write_journaled(self, journal: LedgerJournal) -> bool:
        """
        Every queued row, in one transaction with the names of the journal segments that hold
        them; then the segments are deleted. False (rows kept, in order) if the database fails.
        """
        if self._retry is not None:
            # The last write failed: the same segments and rows again, without a new segment
            # (while the database is down, this process keeps at most two files open).
            segments, covered = self._retry
        else:
            with self._lock:
                segments = journal.rotate()
                covered = len(self.queue)  # exactly the rows of `segments`
        if not covered and not segments:
            return True
        queue = self.queue
        rows = [queue.popleft() for _ in range(covered)]
        try:
            _insert_with_segments(rows, [s.name for s in segments], self.batch_size)
        except DatabaseError:
            logger.exception("Usage ledger: writing %d rows failed; will retry", len(rows))
            queue.extendleft(reversed(rows))
            self._retry = (segments, covered)
            close_old_connections()
            return False
        self._retry = None
        self.written += covered
        self._forget_segments(journal, segments)
        return True

    def _forget_segments(self, journal: LedgerJournal, segments: list[Segment]) -> None:
        journal.written(segments)
        try:
            _forget_segment_names([s.name for s in segments])
        except DatabaseError:
            # Harmless: a name left behind only stops a replay of a file that is gone.
            logger.exception("Usage ledger: forgetting %d journal segments failed", len(segments))
            close_old_connections()

    def start_journal(self) -> None:
        if self.journal is None and self._make_journal is not None:
            self.journal = self._make_journal()

    def replay(self, directory: Path) -> int:
        """Write the rows of journal segments that stopped processes left (see usage.journal)."""
        return replay_orphans(
            directory,
            already_written=_segment_written,
            write=lambda rows, name: _insert_with_segments(rows, [name], self.batch_size),
            forget=lambda name: _forget_segment_names([name]),
        )


def _insert_with_segments(rows: list[tuple], names: list[str], batch_size: int) -> None:
    from usage.models import JournalSegment

    with transaction.atomic():
        for start in range(0, len(rows), batch_size):
            _insert(rows[start : start + batch_size])
        JournalSegment.objects.bulk_create([JournalSegment(name=name) for name in names])


def _segment_written(name: str) -> bool:
    from usage.models import JournalSegment

    return JournalSegment.objects.filter(name=name).exists()


def _forget_segment_names(names: list[str]) -> None:
    from usage.models import JournalSegment

    if names:
        JournalSegment.objects.filter(name__in=names).delete()


def _insert(batch: list[tuple]) -> None:
    """
    One multi-row INSERT through the cursor: model instances and bulk_create cost tens of
    microseconds a row, several times the insert itself.
    """
    from usage.models import UsageRecord

    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    columns = ", ".join(
        connection.ops.quote_name(cast(Field, UsageRecord._meta.get_field(name)).column)
        for name in FIELDS
    )
    placeholders = ", ".join(["%s"] * len(FIELDS))
    adapt = connection.ops.adapt_datetimefield_value
    rows = [(adapt(dt.datetime.fromtimestamp(row[0], dt.UTC)), *row[1:]) for row in batch]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", rows)  # noqa: S608 (names from the model, values as parameters)


def _flush_last_used() -> None:
    from accounts.services import flush_last_used

    flush_last_used()


def _rollup() -> None:
    from usage.rollups import rollup_usage

    rollup_usage()


class LedgerState:
    """The runtime's writer, configured from the settings when the runtime builds it."""

    def __init__(self, writer: LedgerWriter | None = None) -> None:
        self.writer = writer or LedgerWriter(
            max_queue=settings.USAGE_QUEUE_SIZE,
            batch_size=settings.USAGE_BATCH_SIZE,
            flush_interval=settings.USAGE_FLUSH_INTERVAL,
            rollup_interval=settings.USAGE_ROLLUP_INTERVAL,
            journal=configured_journal,
        )


def get_writer() -> LedgerWriter:
    """The runtime's writer."""
    return get_runtime().part(LedgerState).writer


def journal_directory() -> Path | None:
    """
    Where this database's journal lives: USAGE__JOURNAL_DIR, or beside a SQLite file, or a
    folder named after the database under var/. None for an in-memory database.
    """
    if settings.USAGE_JOURNAL_DIR:
        return Path(settings.USAGE_JOURNAL_DIR)
    database = connection.settings_dict
    name = str(database.get("NAME") or "")
    if connection.vendor == "sqlite":
        if not name or name == ":memory:" or name.startswith("file:") or "mode=memory" in name:
            return None
        return Path(f"{name}.ledger-journal")
    safe = "".join(
        c if c.isalnum() or c in "._-" else "_" for c in f"{name}@{database.get('HOST')}"
    )
    return Path(settings.BASE_DIR) / "var" / "ledger-journal" / safe


def configured_journal() -> LedgerJournal | None:
    if not settings.USAGE_JOURNAL:
        return None
    directory = journal_directory()
    if directory is None:
        return None
    return LedgerJournal(
        directory,
        flush_rows=settings.USAGE_JOURNAL_FLUSH_ROWS,
        flush_seconds=settings.USAGE_JOURNAL_FLUSH_MS / 1000,
    )


def record(**fields: Any) -> bool:
    """
    Queue one request's ledger row (the fields of LedgerWriter.record). On the hot path,
    `get_writer().record` bound once saves a call.
    """
    return get_writer().record(**fields)


def start() -> None:
    """Start the writer thread (ASGI lifespan startup)."""
    get_writer().start()


async def flush_and_stop() -> None:
    """Write what is queued and stop the writer (ASGI lifespan shutdown)."""
    await get_writer().flush_and_stop()
