from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from observability.multiprocess import (
    ENV_VAR,
    mark_worker_dead,
    prepare_multiprocess_dir,
    prune_dead_workers,
    remove_multiprocess_dir,
)

ROOT = Path(__file__).resolve().parents[2]


def run_worker(directory: Path, *args: str) -> int:
    """Run a stand-in worker writing to `directory`; returns its pid."""
    env = {**os.environ, ENV_VAR: str(directory), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.observability.record_traffic", *args], cwd=ROOT, env=env
    )
    assert process.wait(timeout=60) == 0
    return process.pid


def read(directory: Path, name: str, **labels: str) -> float | None:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry.get_sample_value(name, labels)


REQUESTS = {
    "model": "mp-model",
    "endpoint": "text-completion",
    "status_class": "2xx",
    "team": "none",
    "key": "",
}


@pytest.fixture
def metrics_dir(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    path = prepare_multiprocess_dir()
    yield path
    remove_multiprocess_dir(path)


def test_each_server_run_gets_a_fresh_empty_directory(metrics_dir):
    assert os.environ[ENV_VAR] == str(metrics_dir)
    assert metrics_dir.is_dir() and not any(metrics_dir.iterdir())
    other = prepare_multiprocess_dir()
    try:
        assert other != metrics_dir
    finally:
        remove_multiprocess_dir(other)
    assert ENV_VAR not in os.environ
    assert not other.exists()


def test_two_workers_sum_into_one_scrape(metrics_dir):
    run_worker(metrics_dir, "--requests", "3")
    run_worker(metrics_dir, "--requests", "4")
    assert read(metrics_dir, "llmapi_requests_total", **REQUESTS) == 7
    usage = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "mp-model"}
    assert (
        read(metrics_dir, "gen_ai_client_token_usage_sum", **usage, gen_ai_token_type="input") == 70
    )


def test_a_dead_workers_live_gauges_go_but_its_counters_stay(metrics_dir):
    pid = run_worker(metrics_dir, "--requests", "2", "--die-in-flight")
    assert read(metrics_dir, "llmapi_in_flight_requests", model="mp-model") == 1
    assert read(metrics_dir, "llmapi_usage_ledger_queue_depth") == 2
    mark_worker_dead(pid, metrics_dir)
    assert read(metrics_dir, "llmapi_in_flight_requests", model="mp-model") is None
    assert read(metrics_dir, "llmapi_usage_ledger_queue_depth") is None
    assert read(metrics_dir, "llmapi_requests_total", **REQUESTS) == 2


def test_scrapes_forget_workers_that_are_gone_without_the_hook(metrics_dir):
    pid = run_worker(metrics_dir, "--die-in-flight")
    dead_file = metrics_dir / f"gauge_livesum_{pid}.db"
    # A live process's files stay: a copy under this (live) process's pid.
    live_file = metrics_dir / f"gauge_livesum_{os.getpid()}.db"
    live_file.write_bytes(dead_file.read_bytes())
    assert read(metrics_dir, "llmapi_in_flight_requests", model="mp-model") == 2
    assert prune_dead_workers(metrics_dir) == [pid]
    assert not dead_file.exists()
    assert read(metrics_dir, "llmapi_in_flight_requests", model="mp-model") == 1
    assert read(metrics_dir, "llmapi_requests_total", **REQUESTS) == 1


def test_mark_worker_dead_without_a_directory_does_nothing(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    mark_worker_dead(12345)  # the supervisor may call it when metrics are off
    assert prune_dead_workers("/nonexistent/metrics") == []


def test_a_collection_inside_a_metric_write_neither_stalls_nor_is_lost(metrics_dir):
    # The collector may run while prometheus_client holds its lock (creating a series' file):
    # timing that collection must not wait on the lock, which would stop the worker for good.
    run_worker(metrics_dir, "--requests", "40", "--collect-often")
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    pauses = sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "llmapi_gc_pause_seconds_count"
    )
    assert pauses > 0
