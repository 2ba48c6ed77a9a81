"""
The ledger's write-ahead journal: what bounds the rows a crash (SIGKILL, OOM kill, power cut
of the process) can lose.

Rows wait in memory for the writer's next database write (`USAGE__FLUSH_INTERVAL`, 1 s).
With the journal on (`USAGE__JOURNAL`), each accepted row is also appended to a file of this
process's own, written to the operating system once `USAGE__JOURNAL_FLUSH_ROWS` rows wait or
every `USAGE__JOURNAL_FLUSH_MS` milliseconds, whichever comes first. A process killed
outright loses only the rows not yet written to its file: at most FLUSH_ROWS - 1, and never
rows older than FLUSH_MS (plus one tick of the writer thread). FLUSH_ROWS=1 writes each row
as it is recorded: nothing recorded is lost. SIGTERM writes everything, journal or not.

Files are *segments*: the writer closes the current one for new rows just before a database
write, then writes every row those segments hold in one transaction together with the
segments' names (`JournalSegment`), and deletes the files. A segment whose name is in that
table was written already; replaying it would count its rows twice. Each process holds an
exclusive `flock` on its open segments; at start-up (any worker, including one uvicorn starts
in place of a killed one) segments nobody holds are replayed: their rows are written, in one
transaction with their names, and the files deleted. A half-written last line (a kill during
a write) is skipped.

The files live beside the SQLite database (`<db>.ledger-journal/`), or in
`USAGE__JOURNAL_DIR`, one directory per database: rows are only ever replayed into the
database they were meant for. Written, not fsynced: a killed process loses nothing the
kernel has, a power cut can lose what the kernel had not yet put on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

logger = logging.getLogger(__name__)

SUFFIX = ".jsonl"
ERROR_LOG_INTERVAL = 10.0


@dataclass
class Segment:
    path: Path
    fd: int
    rows: int = 0

    @property
    def name(self) -> str:
        return self.path.name


class LedgerJournal:
    """This process's segments. Callers serialize `append`, `flush` and `rotate` (a lock)."""

    def __init__(self, directory: Path, *, flush_rows: int, flush_seconds: float) -> None:
        self.directory = directory
        self.flush_rows = max(1, flush_rows)
        self.flush_seconds = max(0.001, flush_seconds)
        self._pending: list[bytes] = []
        self._current: Segment | None = None
        self._closed: list[Segment] = []
        self._sequence = 0
        host = "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:40]
        self._stem = f"{host}-{os.getpid()}-{time.time_ns()}"
        self._last_error_log = 0.0
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    # --- the request path (under the writer's lock) -----------------------------------------

    def append(self, row: tuple) -> None:
        self._pending.append(orjson.dumps(row) + b"\n")
        if len(self._pending) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Hand the waiting rows to the operating system (one write)."""
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            if self._current is None:
                self._current = self._open_segment()
            data = memoryview(b"".join(lines))
            while data:
                data = data[os.write(self._current.fd, data) :]
            self._current.rows += len(lines)
        except OSError as exc:
            # The rows are still queued for the database; only their crash protection is lost.
            now = time.monotonic()
            if now - self._last_error_log >= ERROR_LOG_INTERVAL:
                self._last_error_log = now
                logger.error("Usage ledger journal: writing %d rows failed: %s", len(lines), exc)

    # --- the writer thread ------------------------------------------------------------------

    def rotate(self) -> list[Segment]:
        """
        Write what waits, start a new segment for the rows to come, and return every segment
        not yet written to the database: together they hold exactly the rows queued now.
        """
        self.flush()
        if self._current is not None:
            self._closed.append(self._current)
            self._current = None
        return list(self._closed)

    def written(self, segments: Iterable[Segment]) -> None:
        """The segments' rows are in the database (with their names): delete the files."""
        for segment in segments:
            with contextlib.suppress(FileNotFoundError):
                segment.path.unlink()
            os.close(segment.fd)  # releases the flock
            self._closed.remove(segment)

    def _open_segment(self) -> Segment:
        self._sequence += 1
        path = self.directory / f"{self._stem}-{self._sequence:08d}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return Segment(path, fd)


def read_rows(fd: int) -> list[tuple]:
    """A segment's rows; a line that is not a whole row (cut by a kill) is skipped."""
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    rows = []
    for line in b"".join(chunks).splitlines():
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(row, list):
            rows.append(tuple(row))
    return rows


def replay_orphans(
    directory: Path,
    *,
    already_written: Callable[[str], bool],
    write: Callable[[list[tuple], str], None],
    forget: Callable[[str], None],
) -> int:
    """
    Write the rows of every segment no live process holds (see the module docstring) and
    delete the files. Returns the number of rows written. `write(rows, name)` stores the rows
    and the name in one transaction; `forget(name)` drops the name afterwards.
    """
    if not directory.is_dir():
        return 0
    replayed = 0
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive and will write it
            if os.fstat(fd).st_nlink == 0:
                continue  # written and deleted by another process since we opened it
            if not already_written(path.name):
                rows = read_rows(fd)
                if rows:
                    write(rows, path.name)
                    replayed += len(rows)
            path.unlink()
            forget(path.name)
        finally:
            os.close(fd)
    if replayed:
        logger.warning(
            "Usage ledger: %d rows a stopped process had journaled were written", replayed
        )
    return replayed
