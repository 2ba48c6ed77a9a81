"""The embedded SmolLM2 model, for real, through the real server (no model server anywhere)."""

import importlib.util
import json
import threading
from http import HTTPStatus

import httpx
import pytest

from tests.completions.test_structured import REVIEW_SCHEMA

# Checked without importing it: the gateway process, not the test process, runs the model.
if importlib.util.find_spec("llama_cpp") is None:
    pytest.fail("llama-cpp-python is part of requirements.txt", pytrace=False)

QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}


@pytest.fixture
def local_gateway(gateways):
    return gateways.get(
        TEXT_MODEL__BASE_URL="",
        TEXT_MODEL__MODEL_NAME="",
        TEXT_MODEL__QUEUE_TIMEOUT="0",
    )


def test_completion_is_real_text_from_the_embedded_model(local_gateway):
    with local_gateway.client() as client:
        response = client.post("/text_model/chat/completion", json={**QUESTION, "max_tokens": 24})
    assert response.status_code == HTTPStatus.OK
    body = response.json()
    assert body["response"].strip()
    assert body["model"] == "smollm2-135m-instruct"
    assert body["finish_reason"] in ("stop", "length")
    assert 0 < body["usage"]["completion_tokens"] <= 24
    assert body["usage"]["prompt_tokens"] > 0


def test_streaming_sends_several_chunks(local_gateway):
    chunks = []
    with (
        local_gateway.client() as client,
        client.stream(
            "POST",
            "/text_model/chat/stream",
            json={**QUESTION, "max_tokens": 24},
            headers={"Accept": "text/event-stream"},
        ) as response,
    ):
        assert response.status_code == HTTPStatus.OK
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunks.append(json.loads(line.removeprefix("data: ")))
    deltas = [c["delta"] for c in chunks if "delta" in c]
    assert len(deltas) >= 3
    assert chunks[-1]["finish_reason"] in ("stop", "length")


def test_seed_and_zero_temperature_repeat_the_answer(local_gateway):
    request = {
        "messages": [{"role": "user", "content": "Calculate 2+2"}],
        "temperature": 0.0,
        "seed": 42,
        "max_tokens": 32,
    }
    with local_gateway.client() as client:
        first = client.post("/text_model/chat/completion", json=request).json()["response"]
        second = client.post("/text_model/chat/completion", json=request).json()["response"]
    assert first and first == second


def test_json_schema_gives_json_or_an_honest_502(local_gateway):
    schema = REVIEW_SCHEMA
    request = {
        "messages": [
            {"role": "user", "content": "Analyze this product review: great value, works well"}
        ],
        "max_tokens": 80,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "review", "schema": schema},
        },
    }
    with local_gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=request)
    if response.status_code == HTTPStatus.OK:
        parsed = json.loads(response.json()["response"])
        assert set(schema["required"]) <= set(parsed)
    else:
        assert response.status_code == HTTPStatus.BAD_GATEWAY
        assert "valid" in response.json()["detail"]


def test_disconnect_stops_generation_and_frees_the_slot(local_gateway):
    long_request = {
        "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
        "max_tokens": 1500,
        "temperature": 0.8,
    }
    with (
        local_gateway.client() as client,
        client.stream("POST", "/text_model/chat/stream", json=long_request) as response,
    ):
        next(response.iter_text())
    # QUEUE_TIMEOUT=0: this gets 429 unless the slot was already freed by the disconnect.
    with local_gateway.client() as client:
        for _ in range(50):
            answer = client.post("/text_model/chat/completion", json={**QUESTION, "max_tokens": 4})
            if answer.status_code != HTTPStatus.TOO_MANY_REQUESTS:
                break
            threading.Event().wait(0.1)
    assert answer.status_code == HTTPStatus.OK
    assert "Local generation stopped after" in local_gateway.log()


def test_docs_answer_while_the_model_is_generating(local_gateway):
    long_request = {
        "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
        "max_tokens": 400,
        "temperature": 0.8,
        "seed": 1,
    }
    with (
        local_gateway.client() as client,
        client.stream("POST", "/text_model/chat/stream", json=long_request) as stream,
    ):
        pieces = stream.iter_text()
        next(pieces)
        docs = httpx.get(f"{local_gateway.url}/docs", timeout=30)
        denied = httpx.post(f"{local_gateway.url}/text_model/chat/completion", json=QUESTION)
        rest = "".join(pieces)  # generation was still going when /docs answered
    assert docs.status_code == HTTPStatus.OK
    assert denied.status_code == HTTPStatus.UNAUTHORIZED
    assert len(rest) > 0


def test_openai_sdk_talks_to_the_embedded_model(local_gateway):
    import openai

    from tests.conftest import API_KEY

    with openai.OpenAI(base_url=f"{local_gateway.url}/v1", api_key=API_KEY, max_retries=0) as sdk:
        assert [m.id for m in sdk.models.list()] == ["smollm2-135m-instruct"]
        answer = sdk.chat.completions.create(
            model="smollm2-135m-instruct", messages=QUESTION["messages"], max_tokens=16
        )
    assert answer.choices[0].message.content.strip()
