"""
Observability on a real gateway (`manage.py serve` under uvicorn, against the fake model
server): the timing headers of a real response, the metric series known traffic leaves behind,
the JSON log lines, and a real Prometheus scraping a two-worker gateway with its bearer token.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, ROOT
from tests.fake_upstream import _free_port, wait_for_http
from tests.waiting import wait_until

TOKEN = "metrics-token-for-tests"
UPSTREAM_KEY = "upstream-secret-token"
QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
ANSWER_WORDS = len("The capital of France is Paris.".split())
PROMETHEUS = shutil.which("prometheus")


def scrape(client: httpx.Client) -> dict[tuple[str, frozenset], float]:
    """Every sample of GET /metrics, by name and labels."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == HTTPStatus.OK, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_real_response_carries_server_timing(gateways, upstream):
    gateway = gateways.get(TEXT_MODEL__BASE_URL=upstream.url, TEXT_MODEL__MODEL_NAME="timed")
    with gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=QUESTION)
        streamed = client.post("/text_model/chat/stream", json=QUESTION)
    assert response.status_code == HTTPStatus.OK
    for answer in (response, streamed):
        phases = dict(
            re.fullmatch(r"(\w+);dur=([\d.]+)", part.strip()).groups()  # type: ignore[union-attr]
            for part in answer.headers["Server-Timing"].split(",")
        )
        assert set(phases) == {"queue", "upstream_ttfb", "total"}
        assert float(phases["upstream_ttfb"]) <= float(phases["total"])
        assert answer.headers["x-llmapi-total-ms"] == phases["total"]


def test_known_traffic_leaves_the_right_series(gateways, upstream):
    dead_port = _free_port()  # nothing listens there: a failing replica
    model = f"observed-{upstream.port}"
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=f"{upstream.url},http://127.0.0.1:{dead_port}",
        TEXT_MODEL__MODEL_NAME=model,
        TEXT_MODEL__EJECT_AFTER="1",
        TEXT_MODEL__EJECT_SECONDS="60",
        TEXT_MODEL__MAX_CONCURRENCY="1",
        TEXT_MODEL__QUEUE_TIMEOUT="0",
        # In turn, so that the dead replica is tried once whatever its port's hash.
        TEXT_MODEL__ROUTING="least_busy",
        METRICS__TOKEN=TOKEN,
    )
    with gateway.client() as client:
        before = scrape(client)
        statuses = [
            client.post("/text_model/chat/completion", json=QUESTION).status_code for _ in range(4)
        ]
        stream = client.post("/text_model/chat/stream", json=QUESTION)
        bad = client.post("/text_model/chat/completion", json={"messages": []})
        # One slot and no queue: while a slow answer holds it, the next request gets a 429.
        upstream.behave(delay=3.0)
        received = len(upstream.requests)
        slow = threading.Thread(
            target=lambda: client.post("/text_model/chat/completion", json=QUESTION)
        )
        slow.start()
        wait_until(lambda: len(upstream.requests) > received)  # it holds the slot now
        busy = client.post("/text_model/chat/completion", json=QUESTION)
        slow.join()
        after = scrape(client)
    assert statuses == [HTTPStatus.OK] * 4 and stream.status_code == HTTPStatus.OK
    assert bad.status_code == HTTPStatus.BAD_REQUEST
    assert busy.status_code == HTTPStatus.TOO_MANY_REQUESTS

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"model": model, "status_class": "2xx"}
    assert delta("llmapi_requests_total", endpoint="text-completion", **ok) == 5
    assert delta("llmapi_requests_total", endpoint="text-stream", **ok) == 1
    # The 400 is refused before any model is chosen; the 429 knows its model.
    assert delta("llmapi_requests_total", endpoint="text-completion", status_class="4xx") == 2
    assert (
        delta("llmapi_requests_total", model=model, endpoint="text-completion", status_class="4xx")
        == 1
    )
    assert delta("llmapi_rate_limited_total", cause="model_slots", model=model) == 1
    output = {"gen_ai_request_model": model, "gen_ai_token_type": "output"}
    assert delta("gen_ai_client_token_usage_sum", **output) == 6 * ANSWER_WORDS
    assert delta("gen_ai_client_token_usage_count", **output) == 6
    ttft = {"gen_ai_request_model": model}
    assert delta("gen_ai_server_time_to_first_token_seconds_count", **ttft) == 6
    assert delta("llmapi_queue_wait_seconds_count", model=model) == 6
    assert value(after, "llmapi_in_flight_requests", model=model) == 0
    # The dead replica failed once (then was ejected for a minute), and that attempt was retried.
    dead = f"http://127.0.0.1:{dead_port}"
    assert delta("llmapi_upstream_errors_total", model=model, replica=dead, kind="unavailable") == 1
    assert delta("llmapi_replica_ejections_total", model=model, replica=dead) == 1
    assert delta("llmapi_upstream_retries_total", model=model, replica=dead) == 1


def test_json_logs_parse_and_hold_no_secret(gateways, upstream):
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="logged",
        TEXT_MODEL__API_KEY=UPSTREAM_KEY,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
    )
    with gateway.client() as client:
        answered = client.post(
            "/text_model/chat/completion", json=QUESTION, headers={"X-Request-ID": "json-ok"}
        )
        streamed = client.post(
            "/text_model/chat/stream", json=QUESTION, headers={"X-Request-ID": "json-stream"}
        )
        refused = client.post(
            "/text_model/chat/completion",
            json=QUESTION,
            headers={"X-API-Key": "llm_wrong_0123456789abcdef", "X-Request-ID": "json-403"},
        )
    assert answered.status_code == streamed.status_code == HTTPStatus.OK
    assert refused.status_code == HTTPStatus.FORBIDDEN
    wait_until(lambda: '"json-403"' in gateway.log())
    text = gateway.log()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(line, dict) and "level" in line for line in lines)
    summaries = {
        line["request_id"]: line for line in lines if line.get("logger") == "llmapi.requests"
    }
    for request_id, endpoint, status in [
        ("json-ok", "text-completion", 200),
        ("json-stream", "text-stream", 200),
    ]:
        line = summaries[request_id]
        assert line["endpoint"] == endpoint and line["status"] == status
        assert line["model"] == "logged" and line["latency_ms"] > 0
        assert line["completion_tokens"] == ANSWER_WORDS
    assert summaries["json-403"]["status"] == HTTPStatus.FORBIDDEN
    assert "latency_ms" in summaries["json-403"]
    for secret in (API_KEY, UPSTREAM_KEY, "llm_wrong_0123456789abcdef"):
        assert secret not in text


# --- a real Prometheus, a real two-worker gateway ------------------------------------------


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def two_worker_gateway(tmp_path, upstream):
    port = _free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "API_KEY": API_KEY,
        "TEXT_MODEL__BASE_URL": upstream.url,
        "TEXT_MODEL__MODEL_NAME": "scraped",
        "METRICS__TOKEN": TOKEN,
        "SERVER__PID_FILE": str(tmp_path / "llmapi.pid"),
        "DATABASE__SQLITE_PATH": str(tmp_path / "llmapi.sqlite3"),
        "API_KEYS__PEPPER": "test-pepper",
        "TMPDIR": str(temp),  # where the server makes its metrics directory
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", "2"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", process=process, log=log_path)
        (metrics_dir,) = temp.glob("llmapi-metrics-*")
        yield url, metrics_dir
    finally:
        stop(process)
    assert not list(temp.glob("llmapi-metrics-*")), "the server removes its metrics directory"


def start_prometheus(tmp_path: Path, target: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: llmapi\n"
        f"    authorization:\n      credentials_file: {token_file}\n"
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


def wait_for_value(prometheus: str, promql: str, expected: float, timeout: float = 120):
    deadline = time.monotonic() + timeout
    found = None
    while time.monotonic() < deadline:
        found = query(prometheus, promql)
        if found == expected:
            return found
        time.sleep(0.5)
    return found


@pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus binary is not installed (apt-get install prometheus)"
)
def test_prometheus_counts_every_request_of_a_two_worker_gateway(two_worker_gateway, tmp_path):
    gateway, metrics_dir = two_worker_gateway
    sent = 0
    workers: set[str] = set()
    # A new connection per request, so the kernel spreads them over both workers.
    with httpx.Client(
        base_url=gateway,
        headers={"X-API-Key": API_KEY},
        timeout=60,  # a generous deadline: a worker may still be starting under load
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as client:
        while sent < 40 or (len(workers) < 2 and sent < 400):
            response = client.post("/text_model/chat/completion", json=QUESTION)
            assert response.status_code == HTTPStatus.OK
            sent += 1
            # Each worker records into files of its own, named after its process id.
            workers = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}
        unauthorized = client.get("/metrics")
    assert unauthorized.status_code == HTTPStatus.UNAUTHORIZED
    # Two workers (three files if a busy machine made the supervisor replace one).
    assert len(workers) >= 2, "every request went to one worker"

    prometheus, url = start_prometheus(tmp_path, gateway.removeprefix("http://"))
    try:
        total = (
            'sum(llmapi_requests_total{model="scraped",endpoint="text-completion",'
            'status_class="2xx"})'
        )
        assert wait_for_value(url, total, sent) == sent
        assert query(url, 'up{job="llmapi"}') == 1
        tokens = 'sum(gen_ai_client_token_usage_sum{gen_ai_request_model="scraped",gen_ai_token_type="output"})'
        assert query(url, tokens) == ANSWER_WORDS * sent
        assert query(url, 'sum(llmapi_in_flight_requests{model="scraped"})') == 0
    finally:
        stop(prometheus)


def test_a_replaced_worker_keeps_its_counts_but_not_its_live_gauges(two_worker_gateway):
    gateway, metrics_dir = two_worker_gateway
    with httpx.Client(
        base_url=gateway,
        headers={"X-API-Key": API_KEY},
        timeout=60,
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as client:
        for _ in range(6):
            assert client.post("/text_model/chat/completion", json=QUESTION).status_code == 200
    # Each worker has its live gauges (in flight, ledger queue) in a file of its own.
    deadline = time.monotonic() + 30
    while len(list(metrics_dir.glob("gauge_livesum_*.db"))) < 2:
        assert time.monotonic() < deadline, "a worker has no live-gauge file"
        time.sleep(0.1)
    gauges = sorted(metrics_dir.glob("gauge_livesum_*.db"))
    victim = int(gauges[0].stem.rsplit("_", 1)[1])
    os.kill(victim, signal.SIGKILL)
    # The supervisor replaces the worker and forgets its in-flight gauge; no scrape has run,
    # so nothing else could have removed the file.
    deadline = time.monotonic() + 30
    while gauges[0].exists():
        assert time.monotonic() < deadline, "the dead worker's live gauges were kept"
        time.sleep(0.1)
    assert (metrics_dir / f"counter_{victim}.db").exists()
    with httpx.Client(base_url=gateway, timeout=60) as client:
        counted = scrape(client)
        wait_for_http(f"{gateway}/healthz")
    assert value(counted, "llmapi_requests_total", model="scraped", status_class="2xx") == 6


def test_structured_output_outcomes_are_counted(gateways, upstream):
    model = f"structured-{upstream.port}"
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url, TEXT_MODEL__MODEL_NAME=model, METRICS__TOKEN=TOKEN
    )
    # The first answer is not JSON and gets repaired; every later one is valid at once.
    upstream.behave(contents=["Paris, I think.", '{"city": "Paris"}'])
    body = {**QUESTION, "model": model, "response_format": {"type": "json_object"}}
    with gateway.client() as client:
        before = scrape(client)
        answers = [client.post("/v1/chat/completions", json=body) for _ in range(2)]
        after = scrape(client)
    assert [a.status_code for a in answers] == [HTTPStatus.OK, HTTPStatus.OK]

    def delta(outcome: str) -> float:
        labels = {"model": model, "outcome": outcome}
        return value(after, "llmapi_structured_output_total", **labels) - value(
            before, "llmapi_structured_output_total", **labels
        )

    assert (delta("repaired"), delta("valid"), delta("failed")) == (1, 1, 0)
