"""Retries, replicas, health probes, graceful shutdown and input limits, end to end."""

import signal
import subprocess
import sys
import threading
import time
from http import HTTPStatus

import httpx
import pytest

from tests.conftest import API_KEY, ROOT
from tests.fake_upstream import FakeUpstream, _free_port, wait_for_http
from tests.processes import kill_tree
from tests.waiting import wait_until

QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}


@pytest.fixture
def retrying_gateway(gateways, upstream):
    return gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="retry",
        TEXT_MODEL__MAX_RETRIES="2",
    )


@pytest.mark.parametrize("status", [502, 503, 504])
def test_transient_failures_are_retried_until_success(retrying_gateway, upstream, status):
    upstream.behave(status=status, fail_first=2)
    with retrying_gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=QUESTION)
    assert response.status_code == HTTPStatus.OK
    assert len(upstream.requests) == 3


def test_retries_give_up_after_max_retries(retrying_gateway, upstream):
    upstream.behave(status=503)
    with retrying_gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=QUESTION)
    assert response.status_code == HTTPStatus.BAD_GATEWAY
    assert len(upstream.requests) == 3


@pytest.mark.parametrize("status", [400, 404, 422, 500])
def test_client_errors_and_plain_500_are_not_retried(retrying_gateway, upstream, status):
    upstream.behave(status=status)
    with retrying_gateway.client() as client:
        client.post("/text_model/chat/completion", json=QUESTION)
    assert len(upstream.requests) == 1


def test_429_is_retried_after_retry_after(retrying_gateway, upstream):
    upstream.behave(status=429, headers={"Retry-After": "1"}, fail_first=1)
    started = time.monotonic()
    with retrying_gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=QUESTION)
    assert response.status_code == HTTPStatus.OK
    assert len(upstream.requests) == 2
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured (a lower bound)


def test_429_with_a_long_retry_after_goes_straight_back_to_the_client(retrying_gateway, upstream):
    upstream.behave(status=429, headers={"Retry-After": "60"})
    with retrying_gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=QUESTION)
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert response.headers["Retry-After"] == "60"
    assert len(upstream.requests) == 1


def test_stream_is_retried_before_its_first_chunk(retrying_gateway, upstream):
    upstream.behave(status=503, fail_first=1)
    with retrying_gateway.client() as client:
        response = client.post("/text_model/chat/stream", json=QUESTION)
    assert response.status_code == HTTPStatus.OK
    assert response.text == "The capital of France is Paris."
    assert len(upstream.requests) == 2


def test_stream_is_not_retried_once_bytes_flowed(retrying_gateway, upstream):
    upstream.behave(chunks=["a ", "b ", "c "], drop_after=2, chunk_interval=0.1)
    with retrying_gateway.client() as client:
        response = client.post(
            "/text_model/chat/stream", json=QUESTION, headers={"Accept": "text/event-stream"}
        )
    assert "event: error" in response.text
    assert len(upstream.requests) == 1


def test_requests_spread_over_replicas_and_fail_over_when_one_dies(
    gateways, upstream, second_upstream
):
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=f"{upstream.url},{second_upstream.url}/v1",
        TEXT_MODEL__MODEL_NAME=f"replicated-{second_upstream.port}",
        TEXT_MODEL__EJECT_AFTER="2",
        TEXT_MODEL__EJECT_SECONDS="1",
        # The same question each time: prefix-aware routing would keep it on one replica.
        TEXT_MODEL__ROUTING="least_busy",
    )
    with gateway.client() as client:
        for _ in range(10):
            assert (
                client.post("/text_model/chat/completion", json=QUESTION).status_code
                == HTTPStatus.OK
            )
        assert len(upstream.requests) >= 3 and len(second_upstream.requests) >= 3

        second_upstream.stop()
        statuses = [
            client.post("/text_model/chat/completion", json=QUESTION).status_code for _ in range(10)
        ]
        assert statuses == [HTTPStatus.OK] * 10  # failover is invisible to the client
        ready = client.get("/readyz", params={"details": "true"}).json()
        dead = [s for s in ready["models"]["text"]["servers"] if not s["reachable"]]
        assert len(dead) == 1 and dead[0]["ejected"]

        revived = FakeUpstream(port=second_upstream.port)
        revived.start()
        try:
            time.sleep(1.2)  # the ejection cooldown
            for _ in range(10):
                client.post("/text_model/chat/completion", json=QUESTION)
            assert revived.requests, "the recovered replica gets traffic again"
        finally:
            revived.stop()


def test_healthz_needs_no_key_and_no_model(gateways):
    gateway = gateways.get(TEXT_MODEL__BASE_URL="http://127.0.0.1:9", TEXT_MODEL__MODEL_NAME="down")
    response = httpx.get(f"{gateway.url}/healthz")
    assert response.status_code == HTTPStatus.OK
    assert response.json() == {"status": "ok"}


def test_readyz_reports_each_model_without_secrets(gateway, upstream):
    response = httpx.get(
        f"{gateway.url}/readyz", params={"details": "true"}, headers={"X-API-Key": API_KEY}
    )
    assert response.status_code == HTTPStatus.OK
    body = response.json()
    assert body["ready"] is True
    assert body["models"]["text"]["servers"][0]["reachable"] is True
    assert body["models"]["text"]["in_flight"] == 0
    assert "upstream-secret-token" not in response.text and API_KEY not in response.text


def test_readyz_is_503_when_a_model_server_is_unreachable(gateways):
    gateway = gateways.get(TEXT_MODEL__BASE_URL="http://127.0.0.1:9", TEXT_MODEL__MODEL_NAME="down")
    response = httpx.get(f"{gateway.url}/readyz")
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert response.json()["not_ready"] == ["text"]
    assert "models" not in response.json()  # the details need a key or the metrics token
    detailed = httpx.get(
        f"{gateway.url}/readyz", params={"details": "true"}, headers={"X-API-Key": API_KEY}
    )
    assert detailed.json()["models"]["text"]["ready"] is False


def test_sigterm_drains_a_stream_in_flight_then_exits(tmp_path, upstream):
    port = _free_port()
    env = {
        "ENV_FILE": "/dev/null",
        "API_KEY": API_KEY,
        "TEXT_MODEL__BASE_URL": upstream.url,
        "SERVER__GRACEFUL_TIMEOUT": "10",
        "PATH": "/usr/bin:/bin",
        "DATABASE__SQLITE_PATH": str(tmp_path / "gateway.sqlite3"),
        "SERVER__PID_FILE": str(tmp_path / "gateway.pid"),
        "API_KEYS__PEPPER": "test-pepper",
    }
    log = (tmp_path / "drain.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", process=process, log=log)
        upstream.behave(chunks=[f"w{i} " for i in range(60)], chunk_interval=0.1)
        with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
            with client.stream("POST", "/text_model/chat/stream", json=QUESTION) as response:
                pieces = response.iter_text()
                text = next(pieces)
                process.send_signal(signal.SIGTERM)
                # No new connections while draining: refused while the stream is still on.
                wait_until(lambda: refuses_connections(url), within=5)
                assert upstream.open_streams
                text += "".join(pieces)
        assert text == "".join(f"w{i} " for i in range(60))  # the stream finished whole
        # uvicorn re-raises the SIGTERM it handled once shutdown is complete.
        assert process.wait(timeout=10) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert "Application shutdown complete" in (tmp_path / "drain.log").read_text()


def refuses_connections(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=1)
    except httpx.TransportError:
        return True
    return False


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"messages": [{"role": "user", "content": "hi"}] * 6}, "messages"),
        ({"messages": [{"role": "user", "content": "x" * 101}]}, "SERVER__MAX_TOTAL_CHARS"),
    ],
)
def test_conversation_limits_are_400(gateways, upstream, body, fragment):
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="limits",
        SERVER__MAX_MESSAGES="5",
        SERVER__MAX_TOTAL_CHARS="100",
    )
    with gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=body)
        openai_response = client.post("/v1/chat/completions", json={"model": "limits", **body})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert fragment in response.json()["detail"]
    assert openai_response.status_code == HTTPStatus.BAD_REQUEST
    assert upstream.requests == []


def test_concurrent_requests_keep_request_ids_apart(gateway, upstream):
    upstream.behave(delay=0.2)
    ids = {}

    def call(n):
        with gateway.client() as client:
            response = client.post(
                "/text_model/chat/completion", json=QUESTION, headers={"X-Request-ID": f"req-{n}"}
            )
        ids[n] = response.headers["X-Request-ID"]

    threads = [threading.Thread(target=call, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ids == {n: f"req-{n}" for n in range(5)}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_generated_key_is_printed_once_and_works_in_every_worker(tmp_path, upstream, workers):
    port = _free_port()
    env = {
        "ENV_FILE": "/dev/null",
        "TEXT_MODEL__BASE_URL": upstream.url,
        "PATH": "/usr/bin:/bin",
        "DATABASE__SQLITE_PATH": str(tmp_path / "gateway.sqlite3"),
        "SERVER__PID_FILE": str(tmp_path / "gateway.pid"),
        "API_KEYS__PEPPER": "test-pepper",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", workers],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=process, log=log_path)
        output = log_path.read_text()
        assert output.count("X-API-Key: ") == 1
        key = output.split("X-API-Key: ")[1].split()[0]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            statuses = {
                client.post(
                    "/text_model/chat/completion", json=QUESTION, headers={"X-API-Key": key}
                ).status_code
                for _ in range(8)  # spread over the workers
            }
            wrong = client.post(
                "/text_model/chat/completion", json=QUESTION, headers={"X-API-Key": "x"}
            )
        assert statuses == {HTTPStatus.OK}
        assert wrong.status_code == HTTPStatus.FORBIDDEN
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill_tree(process)  # its workers too, or they outlive the test
