import json
from dataclasses import replace
from http import HTTPStatus

import httpx
import pytest

from completions import services, structured
from completions.exceptions import InvalidModelOutput
from completions.registry import get_model_spec
from completions.upstream import OpenAICompatibleBackend

REVIEW_SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string"},
    },
    "required": ["sentiment", "rating", "summary"],
}
REVIEW_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "product_review", "schema": REVIEW_SCHEMA},
}
VALID = '{"sentiment": "positive", "rating": 5, "summary": "Great value."}'
OUT_OF_RANGE = '{"sentiment": "positive", "rating": 100, "summary": "Great value."}'
MESSAGES = [{"role": "user", "content": "Analyze this product review"}]


def test_valid_schema_output_is_parsed():
    check = structured.check_output(VALID, REVIEW_FORMAT)
    assert check.valid and check.parsed["rating"] == 5


def test_schema_violation_reports_path_and_message():
    check = structured.check_output(OUT_OF_RANGE, REVIEW_FORMAT)
    assert not check.valid
    assert check.errors == [{"path": "$.rating", "message": "100 is greater than the maximum of 5"}]


@pytest.mark.parametrize("text", ["Sure! Here it is", "[1, 2]", '"just a string"', "{broken"])
def test_json_object_mode_needs_a_json_object(text):
    assert not structured.check_output(text, {"type": "json_object"}).valid


def test_markdown_fence_around_json_is_accepted_and_removed():
    check = structured.check_output(f"```json\n{VALID}\n```", REVIEW_FORMAT)
    assert check.valid and check.text == VALID


def test_schema_dialect_follows_dollar_schema():
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "required": ["a"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": draft4}}
    assert not structured.check_output("{}", fmt).valid
    assert structured.check_output('{"a": 1}', fmt).valid


def scripted_backend(answers: list[str], seen: list[dict], status_for=None):
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if status_for and (status := status_for(body)):
            return httpx.Response(status, json={"error": {"message": "unsupported"}})
        content = answers[min(len(seen) - 1, len(answers) - 1)]
        return httpx.Response(
            200,
            json={
                "model": "m",
                "choices": [{"message": {"content": content}, "finish_reason": "stop"}],
            },
        )

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.fixture
def model(monkeypatch):
    spec = replace(
        get_model_spec("text"), kind="structured-test", base_url="http://m", json_retries=1
    )
    holder = {}

    def use(answers, status_for=None, **changes):
        seen: list[dict] = []
        client = scripted_backend(answers, seen, status_for)
        monkeypatch.setattr(
            services, "get_backend", lambda s: OpenAICompatibleBackend(s, client=client)
        )
        holder["spec"] = replace(spec, **changes)
        return holder["spec"], seen

    services._native_schema_refused.discard("structured-test")
    return use


async def test_invalid_then_valid_is_200_after_one_repair(model):
    spec, seen = model([OUT_OF_RANGE, VALID])
    result = await services.chat_completion(
        spec=spec, messages=MESSAGES, params={"response_format": REVIEW_FORMAT}
    )
    assert result.parsed == json.loads(VALID)
    assert result.response == VALID
    assert len(seen) == 2
    repair = seen[1]["messages"]
    assert repair[1] == {"role": "assistant", "content": OUT_OF_RANGE}
    assert "$.rating" in repair[2]["content"] and "maximum" in repair[2]["content"]


async def test_invalid_twice_is_502_with_errors_and_last_output(model):
    spec, seen = model([OUT_OF_RANGE, OUT_OF_RANGE])
    with pytest.raises(InvalidModelOutput) as caught:
        await services.chat_completion(
            spec=spec, messages=MESSAGES, params={"response_format": REVIEW_FORMAT}
        )
    assert caught.value.status_code == HTTPStatus.BAD_GATEWAY
    assert "did not produce valid" in str(caught.value.detail)
    assert caught.value.extra["errors"][0]["path"] == "$.rating"
    assert caught.value.extra["output"] == OUT_OF_RANGE
    assert len(seen) == 2


async def test_invalid_json_in_json_object_mode_is_502(model):
    spec, _ = model(["not json at all"], json_retries=0)
    with pytest.raises(InvalidModelOutput) as caught:
        await services.chat_completion(
            spec=spec, messages=MESSAGES, params={"response_format": {"type": "json_object"}}
        )
    assert "Not valid JSON" in str(caught.value.detail)


async def test_text_format_is_not_validated(model):
    spec, seen = model(["plain words"])
    result = await services.chat_completion(
        spec=spec, messages=MESSAGES, params={"response_format": {"type": "text"}}
    )
    assert result.response == "plain words" and result.parsed is None and len(seen) == 1


def rejects_schema(body):
    return 400 if body.get("response_format", {}).get("type") == "json_schema" else None


async def test_server_refusing_json_schema_gets_json_object_plus_schema_prompt(model):
    spec, seen = model([VALID], status_for=rejects_schema)
    result = await services.chat_completion(
        spec=spec, messages=MESSAGES, params={"response_format": REVIEW_FORMAT}
    )
    assert result.parsed["sentiment"] == "positive"
    assert seen[0]["response_format"] == REVIEW_FORMAT
    assert seen[1]["response_format"] == {"type": "json_object"}
    assert seen[1]["messages"][0]["role"] == "system"
    assert '"rating"' in seen[1]["messages"][0]["content"]


async def test_native_mode_does_not_fall_back(model):
    spec, seen = model([VALID], status_for=rejects_schema, json_schema_mode="native")
    with pytest.raises(Exception) as caught:
        await services.chat_completion(
            spec=spec, messages=MESSAGES, params={"response_format": REVIEW_FORMAT}
        )
    assert caught.value.status_code == HTTPStatus.BAD_REQUEST
    assert len(seen) == 1


async def test_prompt_mode_never_sends_json_schema(model):
    spec, seen = model([VALID], json_schema_mode="prompt")
    await services.chat_completion(
        spec=spec, messages=MESSAGES, params={"response_format": REVIEW_FORMAT}
    )
    assert seen[0]["response_format"] == {"type": "json_object"}
