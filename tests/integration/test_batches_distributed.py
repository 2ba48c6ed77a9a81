"""
Batches shared by gateway processes, and a gateway killed half-way: every line ends in the
output or the error file exactly once.

* Two gateway processes on one PostgreSQL (a throw-away cluster, see tests/postgresql.py)
  and one files folder work on one batch; both run lines, no line is answered twice.
* A gateway is killed with SIGKILL while lines run, and started again on the same database:
  the lines it held are claimed again once their lease passes, and the batch completes with
  each line once.
"""

from __future__ import annotations

import collections
import io
import json
import re
import signal
import time

import httpx
import openai
import pytest

from tests.conftest import API_KEY, GatewayPool
from tests.postgresql import PostgresServer, find_bin_dir

DEADLINE = 120.0
METRICS_TOKEN = "batch-metrics-token"


def lines_file(count: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "fake-llm", "messages": [{"role": "user", "content": f"q{i}"}]},
            }
        ).encode()
        + b"\n"
        for i in range(count)
    )


def start_batch(url: str, count: int) -> str:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0) as client:
        uploaded = client.files.create(
            file=("lines.jsonl", io.BytesIO(lines_file(count))), purpose="batch"
        )
        return client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id


def batch_of(url: str, batch_id: str):
    with openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0) as client:
        return client.batches.retrieve(batch_id)


def wait_for(url: str, batch_id: str, done):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            batch = batch_of(url, batch_id)
        except openai.APIConnectionError:
            batch = None
        if batch is not None and done(batch):
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id}: {batch}")


def results(url: str, batch) -> list[dict]:
    entries = []
    with openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0) as client:
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                text = client.files.content(file_id).text
                entries += [json.loads(line) for line in text.splitlines()]
    return entries


def completed_lines_metric(url: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    found = re.search(r'^llmapi_batch_lines_total\{outcome="completed"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def pool(tmp_path):
    pool = GatewayPool(tmp_path)
    yield pool
    pool.stop_all()


def gateway_env(upstream, tmp_path, **extra: str) -> dict[str, str]:
    return {
        "TEXT_MODEL__BASE_URL": upstream.url,
        "TEXT_MODEL__MODEL_NAME": "fake-llm",
        "TEXT_MODEL__MAX_CONCURRENCY": "4",
        "BATCHES__FILES_DIR": str(tmp_path / "files"),
        "BATCHES__POLL_SECONDS": "0.1",
        "BATCHES__CONCURRENCY": "4",
        "METRICS__TOKEN": METRICS_TOKEN,
        "DATABASE__SQLITE_PATH": str(tmp_path / "shared.sqlite3"),
        # The ledger's journal in the test's folder (for PostgreSQL it would go to var/).
        "USAGE__JOURNAL_DIR": str(tmp_path / "ledger-journal"),
        **extra,
    }


@pytest.mark.skipif(find_bin_dir() is None, reason="PostgreSQL binaries not found")
def test_two_gateways_on_one_postgresql_share_a_batch_and_run_each_line_once(
    pool, upstream, tmp_path
):
    bin_dir = find_bin_dir()
    assert bin_dir is not None
    postgresql = PostgresServer(bin_dir)
    postgresql.start()
    try:
        postgresql._run(
            "createdb", "-h", "127.0.0.1", "-p", str(postgresql.port), "-U", "llmapi", "llmapi"
        )
        upstream.behave(delay=0.05)
        env = gateway_env(upstream, tmp_path, DATABASE_URL=postgresql.url)
        first = pool.get(**env, INSTANCE="1")  # started one after the other: one migrates
        second = pool.get(**env, INSTANCE="2")
        batch_id = start_batch(first.url, 200)
        batch = wait_for(second.url, batch_id, lambda b: b.status == "completed")

        assert (batch.request_counts.completed, batch.request_counts.failed) == (200, 0)
        entries = results(second.url, batch)
        assert sorted(e["custom_id"] for e in entries) == sorted(f"line-{i}" for i in range(200))
        asked = collections.Counter(r.body["messages"][0]["content"] for r in upstream.requests)
        assert asked == {f"q{i}": 1 for i in range(200)}  # no line was run twice
        assert completed_lines_metric(first.url) > 0
        assert completed_lines_metric(second.url) > 0
        assert completed_lines_metric(first.url) + completed_lines_metric(second.url) == 200
    finally:
        pool.stop_all()
        postgresql.stop()


def test_a_gateway_killed_half_way_loses_no_line_and_finishes_none_twice(pool, upstream, tmp_path):
    upstream.behave(delay=0.2)
    env = gateway_env(upstream, tmp_path, BATCHES__LEASE_SECONDS="2")
    gateway = pool.get(**env)
    batch_id = start_batch(gateway.url, 60)
    before = wait_for(gateway.url, batch_id, lambda b: b.request_counts.completed >= 12)
    assert before.status == "in_progress"
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait(timeout=10)
    assert upstream.active > 0 or len(upstream.requests) < 60  # it died with work left

    restarted = pool.get(**env)
    batch = wait_for(restarted.url, batch_id, lambda b: b.status == "completed")

    assert (batch.request_counts.completed, batch.request_counts.failed) == (60, 0)
    entries = results(restarted.url, batch)
    counted = collections.Counter(e["custom_id"] for e in entries)
    assert counted == {f"line-{i}": 1 for i in range(60)}
    assert all(e["response"]["status_code"] == 200 for e in entries)
