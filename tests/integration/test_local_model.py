"""The embedded SmolLM2 model, for real, through the real server (no model server anywhere)."""

import importlib.util
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

import httpx
import jsonschema
import pytest

from tests.inference.test_structured import REVIEW_FORMAT, REVIEW_SCHEMA

pytestmark = pytest.mark.local_model

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


@pytest.fixture
def default_local_gateway(gateways):
    """The embedded model with its default queue: what a fresh install runs."""
    return gateways.get(TEXT_MODEL__BASE_URL="", TEXT_MODEL__MODEL_NAME="")


def chat(text: str, **params) -> dict:
    return {"messages": [{"role": "user", "content": text}], **params}


# Far beyond LOCAL_MODEL__CONTEXT (4096 tokens), far below the 4 MB body limit.
TOO_LONG = chat("Summarize this. " + "The quick brown fox jumps over the lazy dog. " * 700)


def test_answers_do_not_depend_on_the_previous_request(local_gateway):
    def ask(text: str) -> dict:
        response = client.post(
            "/text_model/chat/completion", json=chat(text, temperature=0, max_tokens=30)
        )
        assert response.status_code == HTTPStatus.OK
        return response.json()

    with local_gateway.client() as client:
        first = ask("Name a color")
        ask("Write a haiku about rain")
        third = ask("Name a color")
        fourth = ask("Name a color")
    assert first["response"] == third["response"] == fourth["response"]
    assert first["usage"] == third["usage"] == fourth["usage"]


def test_readme_review_schema_gives_valid_json(local_gateway):
    valid = 0
    with local_gateway.client() as client:
        for seed in range(5):
            request = {
                "messages": [{"role": "user", "content": "Analyze this product review"}],
                "response_format": REVIEW_FORMAT,
                "temperature": 0.7 if seed else 0,
                "seed": seed,
            }
            response = client.post("/text_model/chat/completion", json=request)
            if response.status_code == HTTPStatus.OK:
                jsonschema.validate(json.loads(response.json()["response"]), REVIEW_SCHEMA)
                valid += 1
    assert valid >= 4


def test_story_at_default_settings_ends_without_looping(local_gateway):
    with local_gateway.client() as client:
        client.timeout = httpx.Timeout(300)  # 512 tokens on a busy CPU
        response = client.post("/text_model/chat/completion", json=chat("Tell me a short story"))
    assert response.status_code == HTTPStatus.OK
    body = response.json()
    assert body["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 512  # LOCAL_MODEL__MAX_TOKENS
    lines = [line.strip() for line in body["response"].splitlines() if line.strip()]
    assert lines and max(Counter(lines).values()) < 3


def test_four_simultaneous_readme_requests_all_succeed(default_local_gateway):
    requests = [
        chat("What is the capital of France?", temperature=0.7, max_tokens=100),
        chat("Tell me a short story", temperature=0.8),
        chat("Calculate 2+2", temperature=0.0, seed=42),
        chat(
            "Write a creative story", temperature=1.5, frequency_penalty=0.5, presence_penalty=0.6
        ),
    ]

    def send(index: int) -> int:
        time.sleep(0.2 * index)  # arrival order 0, 1, 2, 3 (served in that order: test_services)
        with default_local_gateway.client() as client:
            client.timeout = httpx.Timeout(300)
            response = client.post("/text_model/chat/completion", json=requests[index])
        return response.status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(send, range(4)))
    assert statuses == [HTTPStatus.OK] * 4


def test_too_long_prompt_is_a_400_on_whole_answers(local_gateway):
    with local_gateway.client() as client:
        seed_api = client.post("/text_model/chat/completion", json=TOO_LONG)
        openai = client.post(
            "/v1/chat/completions", json={**TOO_LONG, "model": "smollm2-135m-instruct"}
        )
    assert seed_api.status_code == HTTPStatus.BAD_REQUEST
    assert seed_api.json()["code"] == "context_length_exceeded"
    assert "4096" in seed_api.json()["detail"]
    assert openai.status_code == HTTPStatus.BAD_REQUEST
    assert openai.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    ("path", "extra", "accept"),
    [
        ("/text_model/chat/stream", {}, "text/plain"),
        ("/text_model/chat/stream", {}, "text/event-stream"),
        ("/v1/chat/completions", {"model": "smollm2-135m-instruct", "stream": True}, None),
    ],
)
def test_too_long_prompt_is_a_400_before_a_stream_starts(local_gateway, path, extra, accept):
    headers = {"Accept": accept} if accept else {}
    with (
        local_gateway.client() as client,
        client.stream("POST", path, json={**TOO_LONG, **extra}, headers=headers) as response,
    ):
        body = json.loads(response.read())
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "application/json" in response.headers["content-type"]
    code = body["error"]["code"] if "error" in body else body["code"]
    assert code == "context_length_exceeded"


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
