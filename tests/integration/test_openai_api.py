"""The /v1 surface driven by the real `openai` SDK against the real server and the fake upstream."""

import json
from http import HTTPStatus

import httpx
import openai
import pytest

from tests.conftest import API_KEY
from tests.images import image_bytes
from tests.inference.test_structured import OUT_OF_RANGE, REVIEW_FORMAT, VALID

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def sdk(gateway):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


def test_models_lists_the_configured_models(sdk):
    assert sorted(model.id for model in sdk.models.list()) == ["fake-llm", "fake-vlm"]


def test_completion_with_usage(sdk, upstream):
    answer = sdk.chat.completions.create(
        model="fake-llm", messages=QUESTION, temperature=0.2, seed=7
    )
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == "The capital of France is Paris."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    sent = upstream.last_request.body
    assert (sent["temperature"], sent["seed"], sent["model"]) == (0.2, 7, "fake-llm")


def test_streaming_reassembles_the_text_and_reports_usage(sdk):
    stream = sdk.chat.completions.create(
        model="fake-llm", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of France is Paris."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 6


def test_structured_output_content_is_the_validated_json(sdk, upstream):
    upstream.behave(contents=[OUT_OF_RANGE, VALID])
    answer = sdk.chat.completions.create(
        model="fake-llm", messages=QUESTION, response_format=REVIEW_FORMAT
    )
    assert json.loads(answer.choices[0].message.content) == json.loads(VALID)
    assert len(upstream.requests) == 2


def test_wrong_key_raises_authentication_error(gateway):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="fake-llm", messages=QUESTION)


def test_x_api_key_header_is_accepted_too(gateway):
    with gateway.client() as client:
        response = client.get("/v1/models")
    assert response.status_code == HTTPStatus.OK


def test_unknown_model_raises_not_found(sdk):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-imaginary", messages=QUESTION)
    assert caught.value.body["code"] == "model_not_found"


def test_sampling_parameters_are_the_model_servers_business(sdk, upstream):
    upstream.behave(status=400, error_body={"error": {"message": "temperature must be <= 2"}})
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="fake-llm", messages=QUESTION, temperature=3)
    assert "temperature must be <= 2" in caught.value.body["message"]
    assert upstream.last_request.body["temperature"] == 3


def test_vendor_parameters_are_forwarded(sdk, upstream):
    sdk.chat.completions.create(
        model="fake-llm",
        messages=QUESTION,
        extra_body={"top_k": 5, "chat_template_kwargs": {"enable_thinking": False}},
    )
    sent = upstream.last_request.body
    assert sent == {
        "model": "fake-llm",
        "messages": QUESTION,
        "top_k": 5,
        "chat_template_kwargs": {"enable_thinking": False},
    }


def test_overloaded_model_raises_rate_limit_error(gateways, upstream):
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="busy-llm",
        TEXT_MODEL__MAX_CONCURRENCY="1",
        TEXT_MODEL__QUEUE_TIMEOUT="0",
    )
    upstream.behave(chunks=[f"w{i} " for i in range(50)], chunk_interval=0.05)
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0) as client:
        stream = client.chat.completions.create(model="busy-llm", messages=QUESTION, stream=True)
        next(iter(stream))  # holds the only slot
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="busy-llm", messages=QUESTION)
        stream.close()
    assert caught.value.response.headers["Retry-After"] == "1"


def test_image_part_reaches_the_image_model(sdk, upstream):
    data_url = (
        "data:image/png;base64," + __import__("base64").b64encode(image_bytes("PNG")).decode()
    )
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": data_url}},
    ]
    answer = sdk.chat.completions.create(
        model="fake-vlm", messages=[{"role": "user", "content": content}]
    )
    assert answer.choices[0].message.content
    sent = upstream.last_request.body
    assert sent["model"] == "fake-vlm"
    assert sent["messages"][0]["content"][1]["image_url"]["url"] == data_url


def test_image_part_for_a_text_only_model_is_refused(sdk):
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(
            model="fake-llm", messages=[{"role": "user", "content": content}]
        )


def test_upstream_failure_keeps_the_mapping(sdk, upstream):
    upstream.behave(status=500)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model="fake-llm", messages=QUESTION)
    assert caught.value.status_code == HTTPStatus.BAD_GATEWAY


def test_missing_key_is_401_in_openai_shape(gateway):
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json={"model": "fake-llm", "messages": QUESTION}
    )
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("value", ["abc", [1], {}, "NaN", "1e999", True])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "n"])
def test_a_bad_token_count_is_a_400_naming_the_field(gateway, upstream, field, value):
    with gateway.client() as client:
        response = client.post(
            "/v1/chat/completions",
            json={
                "model": "fake-llm",
                "messages": [{"role": "user", "content": "hi"}],
                field: value,
            },
        )
    assert response.status_code == HTTPStatus.BAD_REQUEST, response.text
    assert response.json()["error"]["param"] == field
    assert "Traceback" not in response.text
