"""The text endpoints end to end: a real gateway under uvicorn, a real fake model server."""

import asyncio
import time
from http import HTTPStatus

import httpx
import pytest

from tests.conftest import API_KEY, OTHER_KEY
from tests.waiting import wait_until

QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}


def test_completion_answers_in_the_documented_shape(gateway, upstream):
    with gateway.client() as client:
        response = client.post(
            "/text_model/chat/completion", json={**QUESTION, "temperature": 0.7, "max_tokens": 100}
        )
    assert response.status_code == HTTPStatus.OK
    body = response.json()
    assert body["response"] == "The capital of France is Paris."
    assert body["model"] == "fake-llm"
    assert body["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] > 0
    assert response.headers["X-Request-ID"]


def test_every_parameter_reaches_the_upstream_and_defaults_fill_the_rest(gateway, upstream):
    params = {
        "temperature": 1.5,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.6,
        "seed": 42,
        "response_format": {"type": "json_object"},
    }
    upstream.behave(content='{"capital": "Paris"}')
    with gateway.client() as client:
        client.post("/text_model/chat/completion", json={**QUESTION, **params}).raise_for_status()
    sent = upstream.last_request
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "fake-llm"
    assert sent.body["messages"] == QUESTION["messages"]
    for name, value in params.items():
        assert sent.body[name] == value
    assert sent.body["max_tokens"] == 2048


def test_upstream_gets_the_configured_bearer_token_not_the_client_key(gateway, upstream):
    with gateway.client() as client:
        client.post("/text_model/chat/completion", json=QUESTION).raise_for_status()
    headers = upstream.last_request.headers
    assert headers["authorization"] == "Bearer upstream-secret-token"
    assert API_KEY not in str(headers)


def test_a_model_servers_cookie_does_not_travel_to_the_next_caller(gateways, upstream):
    # By name, not IP address: cookie jars keep cookies from names.
    gateway = gateways.get(TEXT_MODEL__BASE_URL=f"http://localhost:{upstream.port}")
    upstream.behave(headers={"Set-Cookie": "session=caller-one; Path=/"})
    with gateway.client() as client:
        client.post("/text_model/chat/completion", json=QUESTION).raise_for_status()
        client.post("/text_model/chat/completion", json=QUESTION).raise_for_status()
    assert len(upstream.requests) == 2
    assert "cookie" not in upstream.last_request.headers


def test_missing_key_is_401_with_exact_message(gateway):
    with gateway.client(key=None) as client:
        response = client.post("/text_model/chat/completion", json=QUESTION)
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.json() == {"detail": "Missing API Key. Please provide X-API-Key header."}
    assert "X-API-Key" in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("path", ["/text_model/chat/completion", "/text_model/chat/stream"])
def test_wrong_key_is_403_with_exact_message(gateway, path):
    with gateway.client(key="wrong") as client:
        response = client.post(path, json=QUESTION)
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert response.json() == {"detail": "Invalid API Key"}


def test_rotated_second_key_is_accepted(gateway, upstream):
    with gateway.client(key=OTHER_KEY) as client:
        assert (
            client.post("/text_model/chat/completion", json=QUESTION).status_code == HTTPStatus.OK
        )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**QUESTION, "temperature": 3}, "temperature"),
        ({**QUESTION, "max_tokens": 0}, "max_tokens"),
        ({**QUESTION, "top_p": -1}, "top_p"),
        ({"messages": []}, "messages"),
        ({}, "messages"),
        (
            {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}},
            "response_format",
        ),
    ],
)
def test_invalid_input_is_400_naming_the_field(gateway, upstream, body, field):
    with gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=body)
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert field in response.json()["detail"]
    assert upstream.requests == []


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_malformed_body_is_400(gateway, content):
    with gateway.client() as client:
        response = client.post(
            "/text_model/chat/completion",
            content=content,
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "detail" in response.json()


def test_oversized_body_is_413(gateway):
    with gateway.client() as client:
        big = {"messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
        response = client.post("/text_model/chat/completion", json=big)
    assert response.status_code in (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, HTTPStatus.BAD_REQUEST)
    assert "detail" in response.json()


@pytest.mark.parametrize(
    ("behaviour", "status", "fragment"),
    [
        (
            {"status": 500, "error_body": {"error": {"message": "CUDA out of memory"}}},
            502,
            "CUDA out of memory",
        ),
        ({"status": 503}, 502, "injected 503"),
        (
            {"status": 400, "error_body": {"error": {"message": "context too long"}}},
            400,
            "context too long",
        ),
        ({"status": 404, "error_body": {"detail": "model not found"}}, 404, "model not found"),
        ({"status": 429, "headers": {"Retry-After": "7"}}, 429, "injected 429"),
        ({"raw_body": b"<html>gateway</html>"}, 502, "not JSON"),
    ],
)
@pytest.mark.parametrize("path", ["/text_model/chat/completion", "/text_model/chat/stream"])
def test_upstream_failures_map_to_documented_statuses(
    gateway, upstream, behaviour, status, fragment, path
):
    upstream.behave(**behaviour)
    with gateway.client() as client:
        response = client.post(path, json=QUESTION)
    if "raw_body" in behaviour and path.endswith("stream"):
        status, fragment = 502, "event stream"
    assert response.status_code == status
    assert fragment in response.json()["detail"]
    assert "Traceback" not in response.text
    if status == 429:
        assert response.headers["Retry-After"] == "7"


def test_unreachable_upstream_is_502(gateways):
    gateway = gateways.get(TEXT_MODEL__BASE_URL="http://127.0.0.1:9", TEXT_MODEL__MODEL_NAME="x")
    with gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=QUESTION)
    assert response.status_code == HTTPStatus.BAD_GATEWAY
    assert "Could not connect" in response.json()["detail"]


def test_slow_upstream_is_504(gateways, upstream):
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url, TEXT_MODEL__MODEL_NAME="slow", TEXT_MODEL__TIMEOUT="0.3"
    )
    upstream.behave(delay=2)
    with gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=QUESTION)
    assert response.status_code == HTTPStatus.GATEWAY_TIMEOUT
    assert "TEXT_MODEL__TIMEOUT" in response.json()["detail"]


def test_stream_arrives_incrementally_as_plain_text(gateway, upstream):
    upstream.behave(chunks=[f"word{i} " for i in range(8)], chunk_interval=0.15)
    arrivals = []
    with (
        gateway.client() as client,
        client.stream("POST", "/text_model/chat/stream", json=QUESTION) as response,
    ):
        assert response.status_code == HTTPStatus.OK
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        text = ""
        for piece in response.iter_text():
            arrivals.append(time.monotonic())
            text += piece
    assert text == "".join(f"word{i} " for i in range(8))
    assert len(arrivals) >= 4
    assert arrivals[-1] - arrivals[0] > 0.5  # the first chunk came long before the last


def test_stream_as_server_sent_events(gateway, upstream):
    with (
        gateway.client() as client,
        client.stream(
            "POST",
            "/text_model/chat/stream",
            json=QUESTION,
            headers={"Accept": "text/event-stream"},
        ) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        body = response.read().decode()
    events = [line.removeprefix("data: ") for line in body.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    import json

    deltas = [json.loads(e)["delta"] for e in events[:-2]]
    assert "".join(deltas) == "The capital of France is Paris."
    final = json.loads(events[-2])
    assert final["finish_reason"] == "stop"
    assert final["usage"]["completion_tokens"] == 6
    assert upstream.last_request.body["stream"] is True


def test_mid_stream_failure_is_an_error_event_over_sse(gateway, upstream):
    upstream.behave(chunks=["a ", "b ", "c "], drop_after=2, chunk_interval=0.1)
    headers = {"Accept": "text/event-stream", "X-Request-ID": "sse-drop-42"}
    with (
        gateway.client() as client,
        client.stream(
            "POST", "/text_model/chat/stream", json=QUESTION, headers=headers
        ) as response,
    ):
        body = response.read().decode()
    assert response.status_code == HTTPStatus.OK
    assert "event: error" in body
    assert '"detail"' in body
    assert "[DONE]" not in body
    # The log line names the request.
    wait_until(lambda: "[sse-drop-42] Stream failed" in gateway.log())


def test_mid_stream_failure_aborts_plain_text_transfer(gateway, upstream):
    upstream.behave(chunks=["a ", "b ", "c "], drop_after=2, chunk_interval=0.1)
    received = ""
    with pytest.raises(httpx.RemoteProtocolError), gateway.client() as client:
        with client.stream("POST", "/text_model/chat/stream", json=QUESTION) as response:
            for piece in response.iter_text():
                received += piece
    assert received == "a b "
    assert "Traceback" not in gateway.log()


def test_concurrency_limit_gives_429_after_queue_timeout_and_frees_slots(gateways, upstream):
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="limited",
        TEXT_MODEL__MAX_CONCURRENCY="2",
        TEXT_MODEL__QUEUE_TIMEOUT="0.3",
    )
    upstream.behave(delay=1.0)

    async def run():
        async with httpx.AsyncClient(
            base_url=gateway.url, headers={"X-API-Key": API_KEY}, timeout=10
        ) as client:
            return await asyncio.gather(
                *(client.post("/text_model/chat/completion", json=QUESTION) for _ in range(4))
            )

    responses = asyncio.run(run())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 429, 429]
    busy = next(r for r in responses if r.status_code == 429)
    assert busy.headers["Retry-After"] == "1"
    assert "busy" in busy.json()["detail"]
    upstream.behave()
    with gateway.client() as client:  # every slot was released
        results = [
            client.post("/text_model/chat/completion", json=QUESTION).status_code for _ in range(3)
        ]
    assert results == [200, 200, 200]


def test_client_disconnect_closes_upstream_stream_and_frees_slot(gateways, upstream):
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="single",
        TEXT_MODEL__MAX_CONCURRENCY="1",
        TEXT_MODEL__QUEUE_TIMEOUT="0",
    )
    # Longer than the wait below: only the gateway closing it can end the upstream's stream.
    upstream.behave(chunks=[f"w{i} " for i in range(1000)], chunk_interval=0.1)
    with (
        gateway.client() as client,
        client.stream("POST", "/text_model/chat/stream", json=QUESTION) as response,
    ):
        next(response.iter_text())
    wait_until(lambda: upstream.disconnects, within=60)  # the upstream saw the stream close
    upstream.behave()
    with gateway.client() as client:
        assert (
            client.post("/text_model/chat/completion", json=QUESTION).status_code == HTTPStatus.OK
        )


def test_client_disconnect_during_non_stream_request_closes_upstream(gateways, upstream):
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="single-ns",
        TEXT_MODEL__MAX_CONCURRENCY="1",
        TEXT_MODEL__QUEUE_TIMEOUT="0",
    )
    upstream.behave(delay=20)  # busy for longer than the wait below
    with gateway.client() as client, pytest.raises(httpx.ReadTimeout):
        client.post("/text_model/chat/completion", json=QUESTION, timeout=0.3)
    upstream.behave()
    with gateway.client() as client:  # the slot is freed although the upstream is still busy
        wait_until(
            lambda: (
                client.post("/text_model/chat/completion", json=QUESTION).status_code
                == HTTPStatus.OK
            ),
            within=15,
        )


def test_model_without_server_answers_503_naming_the_variable(gateways):
    gateway = gateways.get(LOCAL_MODEL__ENABLED="false", TEXT_MODEL__BASE_URL="")
    with gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=QUESTION)
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert "TEXT_MODEL__BASE_URL" in response.json()["detail"]


def test_secrets_never_reach_logs(gateway, upstream):
    upstream.behave(status=500)
    with gateway.client() as client:
        client.post("/text_model/chat/completion", json=QUESTION)
    with gateway.client(key="wrong-key-attempt") as client:
        client.post("/text_model/chat/completion", json=QUESTION)
    log = gateway.log()
    for secret in (API_KEY, OTHER_KEY, "upstream-secret-token", "wrong-key-attempt"):
        assert secret not in log
