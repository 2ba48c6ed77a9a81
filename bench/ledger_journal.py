"""
What the ledger's write-ahead journal costs a request, and what it saves on a crash.

`LedgerWriter.record` per row (CPU microseconds, the median of several rounds) with the
journal off, and on with USAGE__JOURNAL_FLUSH_ROWS of 64 (the default), 8 and 1 (every row
written as it is recorded); the worst-case loss on SIGKILL is FLUSH_ROWS - 1 rows (measured
under load by tests/integration/test_ledger_crash.py).

    .venv/bin/python bench/ledger_journal.py [--rows 200000]

Uses a throw-away folder for the journal; nothing is written to a database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = Path(tempfile.mkdtemp(prefix="llmapi-bench-journal-"))
os.environ.update(
    {
        "ENV_FILE": "/dev/null",
        "DJANGO_SETTINGS_MODULE": "llmapi.settings",
        "DATABASE__SQLITE_PATH": str(TMP / "bench.sqlite3"),
        "LOG_LEVEL": "WARNING",
    }
)

import django  # noqa: E402

django.setup()

from usage.journal import LedgerJournal  # noqa: E402
from usage.ledger import LedgerWriter  # noqa: E402


class Principal:
    key_id, prefix, team_name = 42, "abcd1234", "research"


def microseconds_per_row(flush_rows: int | None, rows: int) -> float:
    directory = TMP / f"journal-{flush_rows}-{time.monotonic_ns()}"
    writer = LedgerWriter(
        max_queue=rows + 1,
        batch_size=rows + 1,
        flush_interval=3600,
        rollup_interval=3600,
        journal=None
        if flush_rows is None
        else (lambda: LedgerJournal(directory, flush_rows=flush_rows, flush_seconds=0.1)),
    )
    writer.start_journal()  # no thread: only the request path's cost is measured
    principal = Principal()
    started = time.process_time()
    for _ in range(rows):
        writer.record(
            principal=principal,
            model="small",
            replica="http://127.0.0.1:8000/v1",
            endpoint="/v1/chat/completions",
            status=200,
            prompt_tokens=60,
            completion_tokens=40,
            latency_ms=12.0,
            ttft_ms=3.0,
            request_id="0123456789abcdef0123456789abcdef",
        )
    return (time.process_time() - started) / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"record() per row, CPU µs, median of {args.rounds} rounds of {args.rows} rows")
    for label, flush_rows in (("journal off", None), ("64", 64), ("8", 8), ("1", 1)):
        runs = [microseconds_per_row(flush_rows, args.rows) for _ in range(args.rounds)]
        loss = "up to USAGE__FLUSH_INTERVAL of rows" if flush_rows is None else flush_rows - 1
        print(
            f"  FLUSH_ROWS={label:>11}: {statistics.median(runs):6.2f} µs/row;"
            f" worst case on SIGKILL: {loss}"
        )


if __name__ == "__main__":
    main()
