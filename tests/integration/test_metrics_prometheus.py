"""
A real Prometheus scrapes a two-worker server whose workers record into one multiprocess
directory; the totals it reports must be exactly the requests made.

Needs Debian's `prometheus` package (scripts/test installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fake_upstream import _free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus binary is not installed (apt-get install prometheus)"
)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def two_worker_server(tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.observability.two_worker_server", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/metrics", process=process, log=log)
        yield url
    finally:
        stop(process)


def start_prometheus(tmp_path: Path, target: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: llmapi\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/-/ready", process=process, log=log)
    return process, url


def query(prometheus: str, promql: str) -> float | None:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=30)
    if response.status_code == 503:  # a Prometheus still starting (slow on a busy machine)
        return None
    answer = response.json()
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for_value(prometheus: str, promql: str, expected: float, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = query(prometheus, promql)
        if value == expected:
            return value
        time.sleep(0.5)
    return value  # type: ignore[return-value]


def test_prometheus_counts_every_request_of_both_workers(two_worker_server, tmp_path):
    pids: set[str] = set()
    sent = 0
    # A new connection per request, so the kernel spreads them over both workers.
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        while sent < 40 or (len(pids) < 2 and sent < 2000):
            response = client.post(f"{two_worker_server}/record")
            assert response.status_code == 200
            pids.add(response.text)
            sent += 1
    assert len(pids) == 2, "every request went to one worker"

    prometheus, url = start_prometheus(tmp_path, two_worker_server.removeprefix("http://"))
    try:
        total = 'sum(llmapi_requests_total{model="two-worker-model",status_class="2xx"})'
        assert wait_for_value(url, total, sent) == sent
        tokens = 'sum(gen_ai_client_token_usage_sum{gen_ai_token_type="output"})'
        assert query(url, tokens) == 5 * sent
        ttft = 'sum(gen_ai_server_time_to_first_token_seconds_count{gen_ai_request_model="two-worker-model"})'
        assert query(url, ttft) == sent
        assert query(url, 'sum(llmapi_in_flight_requests{model="two-worker-model"})') == 0
        assert query(url, 'up{job="llmapi"}') == 1
    finally:
        stop(prometheus)
