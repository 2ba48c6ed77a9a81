"""
SIGKILL under load: a worker killed outright loses at most USAGE__JOURNAL_FLUSH_ROWS - 1
ledger rows; the worker started after it writes the rest. Counted in the database after the
restart, against the responses the clients received.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, ROOT
from tests.fake_upstream import FakeUpstream, _free_port, wait_for_http

QUESTION = {"model": "fake-llm", "messages": [{"role": "user", "content": "hi"}]}


def start(tmp: Path, upstream: FakeUpstream, port: int, flush_rows: int):
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "API_KEY": API_KEY,
        "TEXT_MODEL__BASE_URL": upstream.url,
        "TEXT_MODEL__MODEL_NAME": "fake-llm",
        "DATABASE__SQLITE_PATH": str(tmp / "ledger.sqlite3"),
        "API_KEYS__PEPPER": "test-pepper",
        "SERVER__PID_FILE": str(tmp / "llmapi.pid"),
        # Nothing reaches the database before the kill: every row is in memory and the journal.
        "USAGE__FLUSH_INTERVAL": "3600",
        "USAGE__BATCH_SIZE": "1000000",
        "USAGE__JOURNAL_FLUSH_ROWS": str(flush_rows),
        "USAGE__JOURNAL_FLUSH_MS": "600000",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    with (tmp / f"serve-{time.monotonic_ns()}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_http(f"http://127.0.0.1:{port}/healthz", process=process, log=log)
    return process


def ledger_rows(tmp: Path) -> int:
    with sqlite3.connect(tmp / "ledger.sqlite3", timeout=30) as database:
        return database.execute("SELECT COUNT(*) FROM usage_usagerecord").fetchone()[0]


@pytest.mark.parametrize("flush_rows", [10, 1])
def test_sigkill_under_load_loses_at_most_flush_rows_minus_one(tmp_path, upstream, flush_rows):
    port = _free_port()
    process = start(tmp_path, upstream, port, flush_rows)
    answered = 0
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        nonlocal answered
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": API_KEY}, timeout=10
        ) as client:
            while not stop.is_set():
                try:
                    response = client.post("/v1/chat/completions", json=QUESTION)
                except httpx.HTTPError:
                    continue
                if response.status_code == HTTPStatus.OK:
                    with lock:
                        answered += 1

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while answered < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)  # under load: the worker, killed outright
        process.wait(timeout=30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    seen = answered
    process = start(tmp_path, upstream, port, flush_rows)
    try:
        # The new worker replays the dead one's journal at start-up; SIGTERM then writes the
        # rest of what the live workers hold.
        deadline = time.monotonic() + 60
        while ledger_rows(tmp_path) < seen - (flush_rows - 1):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    rows = ledger_rows(tmp_path)
    lost = seen - rows
    print(
        f"SIGKILL with USAGE__JOURNAL_FLUSH_ROWS={flush_rows}: {max(0, lost)} of {seen} rows lost"
    )
    # At most FLUSH_ROWS - 1; requests in flight at the kill may add rows the clients never saw.
    assert lost <= flush_rows - 1, f"{lost} of {seen} rows lost (flush_rows={flush_rows})"
    assert not list(tmp_path.glob("ledger.sqlite3.ledger-journal/*.jsonl"))
