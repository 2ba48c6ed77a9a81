"""
The ledger's write-ahead journal: a process killed outright loses at most FLUSH_ROWS - 1
rows; the next process writes the rest, once, and never a live process's rows.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from usage.journal import SUFFIX, LedgerJournal
from usage.ledger import LedgerWriter
from usage.models import JournalSegment, UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)


def journaled_writer(directory: Path, *, flush_rows: int = 10, flush_ms: float = 600_000):
    return LedgerWriter(
        max_queue=100_000,
        batch_size=500,
        flush_interval=3600,  # no database write before the "crash"
        rollup_interval=3600,
        journal=lambda: LedgerJournal(
            directory, flush_rows=flush_rows, flush_seconds=flush_ms / 1000
        ),
    )


def crash(writer: LedgerWriter) -> None:
    """What SIGKILL leaves: the files as written, their locks released, memory gone."""
    journal = writer.journal
    assert journal is not None
    for segment in [*journal._closed, *([journal._current] if journal._current else [])]:
        os.close(segment.fd)
    writer.queue.clear()
    writer._stopping = True
    writer._wake.set()


def journal_rows(directory: Path) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in directory.glob(f"*{SUFFIX}"))


def test_a_killed_process_loses_at_most_flush_rows_minus_one_and_the_next_writes_the_rest(
    tmp_path,
):
    first = journaled_writer(tmp_path, flush_rows=10)
    first.start_journal()  # the journal, without the thread (which would write the rows)
    for index in range(25):
        first.record(status=200, request_id=str(index))
    assert journal_rows(tmp_path) == 20  # two writes of ten; five rows wait in memory
    crash(first)

    second = journaled_writer(tmp_path)
    assert second.replay(tmp_path) == 20
    assert sorted(int(r) for r in UsageRecord.objects.values_list("request_id", flat=True)) == (
        list(range(20))
    )
    assert list(tmp_path.glob(f"*{SUFFIX}")) == []
    assert JournalSegment.objects.count() == 0
    assert second.replay(tmp_path) == 0  # once


def test_with_flush_rows_1_nothing_recorded_is_lost(tmp_path):
    first = journaled_writer(tmp_path, flush_rows=1)
    first.start_journal()
    for index in range(7):
        first.record(status=200, request_id=str(index))
    crash(first)
    assert journaled_writer(tmp_path).replay(tmp_path) == 7


def test_the_writer_thread_writes_waiting_rows_every_flush_ms(tmp_path):
    writer = journaled_writer(tmp_path, flush_rows=1000, flush_ms=20)
    writer.start()
    try:
        writer.record(status=200)
        deadline = time.monotonic() + 30
        while journal_rows(tmp_path) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert journal_rows(tmp_path) == 1
    finally:
        asyncio.run(writer.flush_and_stop())
    assert UsageRecord.objects.count() == 1
    assert list(tmp_path.glob(f"*{SUFFIX}")) == []  # written, so deleted


def test_a_live_processs_segments_are_never_replayed(tmp_path):
    live = journaled_writer(tmp_path, flush_rows=1)
    live.start_journal()
    live.record(status=200)
    assert journaled_writer(tmp_path).replay(tmp_path) == 0
    assert UsageRecord.objects.count() == 0
    assert journal_rows(tmp_path) == 1


def test_a_segment_written_just_before_the_kill_is_not_written_twice(tmp_path):
    from usage.ledger import _insert_with_segments

    first = journaled_writer(tmp_path, flush_rows=1)
    first.start_journal()
    for index in range(3):
        first.record(status=200, request_id=str(index))
    assert first.journal is not None
    [segment] = first.journal.rotate()
    rows = list(first.queue)
    _insert_with_segments(rows, [segment.name], 500)  # committed; killed before the unlink
    crash(first)
    assert journaled_writer(tmp_path).replay(tmp_path) == 0
    assert UsageRecord.objects.count() == 3
    assert not segment.path.exists()
    assert JournalSegment.objects.count() == 0


def test_a_half_written_last_line_is_skipped(tmp_path):
    first = journaled_writer(tmp_path, flush_rows=1)
    first.start_journal()
    first.record(status=200, request_id="whole")
    assert first.journal is not None and first.journal._current is not None
    os.write(first.journal._current.fd, b'[1700000000.0, null, "", "", "cut')
    crash(first)
    assert journaled_writer(tmp_path).replay(tmp_path) == 1
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["whole"]


def test_rows_written_normally_leave_no_segment_behind(tmp_path):
    writer = journaled_writer(tmp_path, flush_rows=3)
    writer.start_journal()
    for _ in range(10):
        writer.record(status=200)
    assert writer.write_pending() is True
    assert UsageRecord.objects.count() == 10
    assert list(tmp_path.glob(f"*{SUFFIX}")) == []
    assert JournalSegment.objects.count() == 0
    writer.record(status=200)  # the next rows go to a new segment
    assert writer.write_pending() is True
    assert UsageRecord.objects.count() == 11


def test_the_journal_lives_beside_the_sqlite_database_and_not_for_one_in_memory(settings):
    from tests.settings_probe import settings_value

    assert settings_value("USAGE_JOURNAL") is True
    from django.db import connection

    from usage.ledger import journal_directory

    if connection.vendor != "sqlite":
        pytest.skip("an in-memory database is a SQLite one")
    assert journal_directory() is None  # the tests' database is in memory
    settings.USAGE_JOURNAL_DIR = "/srv/ledger"
    assert journal_directory() == Path("/srv/ledger")


def test_while_the_database_fails_the_same_segment_is_retried_and_no_file_piles_up(tmp_path):
    from django.db import connection

    writer = journaled_writer(tmp_path, flush_rows=1)
    writer.start_journal()
    with connection.cursor() as cursor:  # the table is gone for a while: inserts fail
        cursor.execute("ALTER TABLE usage_usagerecord RENAME TO usage_away")
    try:
        for round_ in range(5):
            writer.record(status=200, request_id=f"r{round_}")
            assert writer.write_pending() is False
        assert len(list(tmp_path.glob(f"*{SUFFIX}"))) <= 2
        assert [row[-1] for row in writer.queue] == [f"r{i}" for i in range(5)]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE usage_away RENAME TO usage_usagerecord")
    assert writer.write_pending() is True  # the first segment's row
    assert writer.write_pending() is True  # then the rest, in a new segment
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == [
        f"r{i}" for i in range(5)
    ]
    assert list(tmp_path.glob(f"*{SUFFIX}")) == []
