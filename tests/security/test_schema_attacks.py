"""
Hostile JSON Schemas and answers, end to end: a real gateway, the fake model server, loopback.

Each test is an attack that used to work: reading server files or reaching internal hosts
through `$ref`, freezing a worker with a regex or `uniqueItems`, 500s from deep JSON, and
error bodies or logs that repeated megabytes of what the client sent.
"""

from __future__ import annotations

import json
import socket
import threading
from http import HTTPStatus

import httpx
import pytest

from tests.inference.test_structured import VALID
from tests.security.hostile import COSTLY_ANSWER, COSTLY_SCHEMA
from tests.waiting import wait_until

MESSAGES = [{"role": "user", "content": "Analyze this product review"}]


@pytest.fixture
def gateway(gateways, upstream):
    """
    A gateway of its own, so its log holds only these attacks. Each attack is a client's
    mistake: none may log a traceback (checked after each test, in whatever order they run).
    """
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="security-llm",
        IMAGE_MODEL__BASE_URL=upstream.url,
        IMAGE_MODEL__MODEL_NAME="security-vlm",
    )
    logged_before = len(gateway.log())
    yield gateway
    assert "Traceback" not in gateway.log()[logged_before:]


def schema_request(schema: dict) -> dict:
    return {
        "messages": MESSAGES,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }


def post(gateway, body, path="/text_model/chat/completion", **kwargs) -> httpx.Response:
    with gateway.client() as client:
        if isinstance(body, bytes):
            headers = {"Content-Type": "application/json"}
            return client.post(path, content=body, headers=headers, **kwargs)
        return client.post(path, json=body, **kwargs)


def longest_log_line(gateway) -> int:
    return max((len(line) for line in gateway.log().splitlines()), default=0)


def test_file_ref_is_400_and_the_file_is_never_read(gateway, upstream, tmp_path):
    secret = tmp_path / "s.json"
    secret.write_text('{"enum": ["TOPSECRET"]}')
    upstream.behave(content='{"a": "x"}')
    response = post(
        gateway, schema_request({"type": "object", "properties": {"a": {"$ref": secret.as_uri()}}})
    )
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "response_format" in response.json()["detail"]
    assert secret.as_uri() in response.json()["detail"]
    assert "TOPSECRET" not in response.text
    assert upstream.requests == []


def test_ref_to_a_silent_host_is_400_at_once_and_nothing_stalls(gateway, upstream):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/schema.json"
        response = post(gateway, schema_request({"properties": {"a": {"$ref": url}}}))
        assert response.status_code == HTTPStatus.BAD_REQUEST
        assert "nothing is fetched" in response.json()["detail"]
        silent.settimeout(0.2)
        with pytest.raises(TimeoutError):
            silent.accept()  # the gateway never connected
    finally:
        silent.close()
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"$ref": "#"}, "loop"),
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "does not point inside"),
        ({"properties": {"a": {"pattern": "(?<=a)b"}}}, "RE2"),
        ({"properties": {"a": {"type": 12}}}, "not a valid JSON Schema"),
    ],
)
def test_unusable_schema_is_400_before_any_model_call(gateway, upstream, schema, problem):
    response = post(gateway, schema_request(schema))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert problem in response.json()["detail"]
    assert upstream.requests == []


def test_schema_nested_300_deep_is_400(gateway, upstream):
    schema: dict = {"type": "object"}
    for _ in range(300):
        schema = {"type": "object", "properties": {"a": schema}}
    response = post(gateway, schema_request(schema))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert upstream.requests == []


@pytest.mark.parametrize("depth", [100, 1_500, 100_000])
def test_deeply_nested_body_is_400(gateway, upstream, depth):
    body = b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"
    response = post(gateway, body)
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "deep" in response.json()["detail"]


def test_deeply_nested_form_response_format_is_400(gateway, upstream):
    from tests.images import image_bytes

    with gateway.client() as client:
        response = client.post(
            "/image_model/chat/completion",
            data={"prompt": "hi", "response_format": "[" * 5000 + "]" * 5000},
            files=[("image", ("p.png", image_bytes("PNG"), "image/png"))],
        )
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "response_format" in response.json()["detail"]
    assert upstream.requests == []


def test_openai_endpoint_refuses_file_ref_in_its_shape(gateway, upstream):
    body = {"model": "security-llm", **schema_request({"$ref": "file:///etc/passwd"})}
    response = post(gateway, body, path="/v1/chat/completions")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    error = response.json()["error"]
    assert error["param"] == "response_format" and "file:///etc/passwd" in error["message"]
    assert "root:" not in response.text


def test_huge_regex_is_400_and_not_echoed(gateway, upstream):
    huge = "a" * 900_000
    response = post(gateway, schema_request({"properties": {"a": {"pattern": huge}}}))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert len(response.content) < 4000
    assert longest_log_line(gateway) < 2000


def test_unknown_role_value_is_not_echoed_whole(gateway, upstream):
    body = {"messages": [{"role": "x" * 200_000, "content": "hi"}]}
    response = post(gateway, body)
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert len(response.content) < 4000
    assert longest_log_line(gateway) < 2000


def test_redos_answer_is_checked_at_once(gateway, upstream):
    evil = "a" * 30 + "!"
    upstream.behave(content=json.dumps({"a": evil}))
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}
    response = post(gateway, schema_request(schema))  # a catastrophic regex would hang here
    assert response.status_code == HTTPStatus.BAD_GATEWAY
    assert response.json()["errors"][0]["path"] == "$.a"


def test_unique_items_over_6000_objects_is_checked_at_once(gateway, upstream):
    items = [{"k": i, "v": [i, str(i)]} for i in range(6000)]
    upstream.behave(content=json.dumps({"a": items}))
    schema = {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}
    response = post(gateway, schema_request(schema))
    assert response.status_code == HTTPStatus.OK
    assert len(response.json()["parsed"]["a"]) == 6000


def test_healthz_is_answered_while_the_worst_accepted_schema_is_checked(gateway, upstream):
    """
    The worst schema inspect_schema accepts, against a 600 KB answer: the budget ends it, and
    the event loop answers /healthz meanwhile. (How fast: `bench/healthz_under_schema_check.py`.)
    """
    upstream.behave(content=COSTLY_ANSWER)
    outcome: dict = {}

    def costly_request():
        outcome["response"] = post(gateway, schema_request(COSTLY_SCHEMA))

    worker = threading.Thread(target=costly_request)
    worker.start()
    answered_during_check = 0
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        wait_until(lambda: upstream.requests, within=60)
        # The check runs off the loop until its budget ends it, and the loop answers probe
        # after probe meanwhile. Blocked, it would answer none before the costly request's own
        # answer.
        while worker.is_alive():
            assert client.get("/healthz").status_code == HTTPStatus.OK
            if worker.is_alive():
                answered_during_check += 1
    worker.join()
    response = outcome["response"]
    assert response.status_code == HTTPStatus.BAD_GATEWAY
    assert "STRUCTURED_OUTPUT__VALIDATION_SECONDS" in response.json()["detail"]
    assert answered_during_check >= 3


def test_stream_reports_a_check_past_its_budget_in_the_last_event(gateway, upstream):
    upstream.behave(content=COSTLY_ANSWER, chunks=[COSTLY_ANSWER])
    with gateway.client() as client:
        response = client.post(
            "/text_model/chat/stream",
            json=schema_request(COSTLY_SCHEMA),
            headers={"Accept": "text/event-stream"},
        )
    events = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]
    final = json.loads(events[-2])
    assert final["valid"] is False
    assert "STRUCTURED_OUTPUT__VALIDATION_SECONDS" in final["errors"][0]["message"]


def test_normal_schema_still_works(gateway, upstream):
    from tests.inference.test_structured import REVIEW_FORMAT

    upstream.behave(content=VALID)
    response = post(gateway, {"messages": MESSAGES, "response_format": REVIEW_FORMAT})
    assert response.status_code == HTTPStatus.OK
    assert response.json()["parsed"]["rating"] == 5
