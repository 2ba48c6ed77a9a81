"""
Real OpenAI-ecosystem clients, unchanged, against /v1 of the real server and the fake upstream
(which answers tool calls the way vLLM does). Each test checks what the client got and the
exact body the model server received: what the client sent, and nothing more.
"""

import asyncio
import json
from http import HTTPStatus

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import API_KEY

QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": WEATHER_PARAMETERS,
    },
}


class Weather(BaseModel):
    city: str


PARIS_CALL = [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]


@pytest.fixture
def sdk(gateway):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def catalog_gateway(gateways, upstream, tmp_path_factory):
    """A gateway with a catalog file: an embeddings model beside the seed's embedded one."""
    path = tmp_path_factory.mktemp("catalog") / "models.yaml"
    path.write_text(
        "models:\n"
        "  fake-embed:\n"
        f"    servers: [{upstream.url}/v1]\n"
        "    upstream_name: BAAI/bge-small\n"
        "    capabilities: [embeddings]\n"
    )
    return gateways.get(LLMAPI_MODELS_FILE=str(path), TEXT_MODEL__BASE_URL="")


# --- the openai SDK ---------------------------------------------------------------------------


def test_sdk_tool_call_whole(sdk, upstream):
    upstream.behave(tool_calls=PARIS_CALL)
    answer = sdk.chat.completions.create(
        model="fake-llm",
        messages=QUESTION,
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert upstream.last_request.body == {
        "model": "fake-llm",
        "messages": QUESTION,
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }


def test_sdk_streamed_tool_calls_reassemble(sdk, upstream):
    upstream.behave(tool_calls=PARIS_CALL)
    with sdk.chat.completions.stream(
        model="fake-llm", messages=QUESTION, tools=[WEATHER_TOOL]
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name) == ("call_0", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert final.choices[0].finish_reason == "tool_calls"
    sent = upstream.last_request.body
    # The gateway adds only the usage chunk it counts tokens with.
    assert sent == {
        "model": "fake-llm",
        "messages": QUESTION,
        "tools": [WEATHER_TOOL],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_sdk_tool_result_round_trip(sdk, upstream):
    conversation = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "18 C, sunny"},
        {"role": "user", "content": "And so?", "name": "alice"},
    ]
    upstream.behave(content="It is 18 C and sunny in Paris.")
    answer = sdk.chat.completions.create(
        model="fake-llm", messages=conversation, tools=[WEATHER_TOOL]
    )
    assert answer.choices[0].message.content == "It is 18 C and sunny in Paris."
    assert upstream.last_request.body["messages"] == conversation


def test_sdk_empty_content_keeps_tool_calls(sdk, upstream):
    call = {
        "id": "call_0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
    }
    messages = [*QUESTION, {"role": "assistant", "content": "", "tool_calls": [call]}]
    messages.append({"role": "tool", "tool_call_id": "call_0", "content": "sunny"})
    sdk.chat.completions.create(model="fake-llm", messages=messages)
    assert upstream.last_request.body["messages"][1]["tool_calls"] == [call]


def test_sdk_nulls_mean_not_set_and_no_defaults_are_injected(sdk, upstream):
    sdk.chat.completions.create(
        model="fake-llm",
        messages=QUESTION,
        extra_body={"temperature": None, "max_tokens": None, "stop": None, "n": None},
    )
    assert upstream.last_request.body == {"model": "fake-llm", "messages": QUESTION}


def test_sdk_extra_body_and_openai_parameters_are_forwarded(sdk, upstream):
    upstream.behave(
        answer_extra={"system_fingerprint": "fp_fake", "service_tier": "default"},
        message_extra={"reasoning_content": "Paris is in France."},
    )
    answer = sdk.chat.completions.create(
        model="fake-llm",
        messages=QUESTION,
        logprobs=True,
        top_logprobs=2,
        logit_bias={"1234": -100},
        n=1,
        metadata={"team": "a"},
        store=False,
        reasoning_effort="low",
        extra_body={"top_k": 20, "repetition_penalty": 1.1, "guided_choice": ["yes", "no"]},
    )
    assert answer.system_fingerprint == "fp_fake"
    assert answer.choices[0].message.model_extra["reasoning_content"] == "Paris is in France."
    sent = upstream.last_request.body
    assert {key: sent[key] for key in ("logprobs", "top_logprobs", "top_k", "guided_choice")} == {
        "logprobs": True,
        "top_logprobs": 2,
        "top_k": 20,
        "guided_choice": ["yes", "no"],
    }
    assert set(sent) == {
        "model",
        "messages",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "n",
        "metadata",
        "store",
        "reasoning_effort",
        "top_k",
        "repetition_penalty",
        "guided_choice",
    }


def test_sdk_streamed_reasoning_content_is_passed_through(sdk, upstream):
    upstream.behave(message_extra={"reasoning_content": "hmm "}, content="Paris.")
    chunks = list(sdk.chat.completions.create(model="fake-llm", messages=QUESTION, stream=True))
    reasoning = [
        c.choices[0].delta.model_extra.get("reasoning_content") for c in chunks if c.choices
    ]
    assert "hmm " in reasoning
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage


def test_sdk_raw_response_keeps_fallback_headers(sdk):
    raw = sdk.chat.completions.with_raw_response.create(model="fake-llm", messages=QUESTION)
    assert raw.headers["X-LLMAPI-Model"] == "fake-llm"
    assert raw.parse().choices[0].message.content == "The capital of France is Paris."


def test_sdk_json_answer_cut_by_max_tokens_is_returned_flagged(sdk, upstream):
    upstream.behave(content='{"city": "Par', finish_reason="length")
    raw = sdk.chat.completions.with_raw_response.create(
        model="fake-llm", messages=QUESTION, response_format={"type": "json_object"}
    )
    answer = raw.parse()
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == '{"city": "Par'
    assert json.loads(raw.text)["validation"]["truncated"] is True
    assert len(upstream.requests) == 1  # no repair of an answer that was cut


def test_sdk_default_retries_do_not_multiply_upstream_calls(gateway, upstream):
    upstream.behave(status=503)
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY) as client:  # 2 retries
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="fake-llm", messages=QUESTION)
    # The gateway's own replica retries (MAX_RETRIES=2), once: not again per SDK retry.
    assert len(upstream.requests) == 3


def test_sdk_strict_tool_arguments_are_checked(sdk, upstream):
    strict = {"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}
    upstream.behave(tool_calls=[{"name": "get_weather", "arguments": '{"town": "Paris"}'}])
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model="fake-llm", messages=QUESTION, tools=[strict])
    assert "strict schema" in caught.value.body["message"]
    upstream.behave(tool_calls=PARIS_CALL)
    answer = sdk.chat.completions.create(model="fake-llm", messages=QUESTION, tools=[strict])
    assert answer.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_sdk_models_retrieve(sdk):
    model = sdk.models.retrieve("fake-llm")
    assert model.id == "fake-llm"
    assert "tools" in model.model_extra["capabilities"]


def test_sdk_embeddings(catalog_gateway, upstream):
    with openai.OpenAI(
        base_url=f"{catalog_gateway.url}/v1", api_key=API_KEY, max_retries=0
    ) as client:
        answer = client.embeddings.create(
            model="fake-embed", input=["a", "bb"], encoding_format="float"
        )
        assert [item.embedding for item in answer.data] == [[0.5, -0.25, 1.0], [0.5, -0.25, 2.0]]
        assert upstream.last_request.path == "/v1/embeddings"
        assert upstream.last_request.body == {
            "model": "BAAI/bge-small",
            "input": ["a", "bb"],
            "encoding_format": "float",
        }
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model="smollm2-135m-instruct", input="a")
        assert "embeddings" in caught.value.body["message"]


def test_sdk_tools_on_the_embedded_model_are_a_clear_400(catalog_gateway, upstream):
    with openai.OpenAI(
        base_url=f"{catalog_gateway.url}/v1", api_key=API_KEY, max_retries=0
    ) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="smollm2-135m-instruct", messages=QUESTION, tools=[WEATHER_TOOL]
            )
    assert "no tool support" in caught.value.body["message"]
    assert upstream.requests == []


def test_sdk_legacy_completions(sdk, upstream):
    answer = sdk.completions.create(model="fake-llm", prompt="Paris is", max_tokens=5)
    assert answer.choices[0].text == "The capital of France is Paris."
    assert upstream.last_request.path == "/v1/completions"
    assert upstream.last_request.body == {
        "model": "fake-llm",
        "prompt": "Paris is",
        "max_tokens": 5,
    }


def test_sdk_legacy_completions_streamed(sdk, upstream):
    chunks = list(sdk.completions.create(model="fake-llm", prompt="Paris is", stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "The capital of France is Paris."
    assert chunks[-1].choices[0].finish_reason == "stop"
    # OpenAI's default of 16 tokens is sent (and reserved); usage is asked for, to count tokens.
    assert upstream.last_request.body == {
        "model": "fake-llm",
        "prompt": "Paris is",
        "stream": True,
        "max_tokens": 16,
        "stream_options": {"include_usage": True},
    }
    assert all(chunk.usage is None for chunk in chunks)  # the client did not ask for it


def test_sdk_async_streaming(gateway):
    async def run() -> str:
        async with openai.AsyncOpenAI(
            base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="fake-llm", messages=QUESTION, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(run()) == "The capital of France is Paris."


# --- /v1 errors in OpenAI's shape -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v1/assistants", HTTPStatus.NOT_FOUND),
        ("POST", "/v1/responses", HTTPStatus.BAD_REQUEST),
        ("POST", "/v1/chat/completions/", HTTPStatus.NOT_FOUND),
        ("GET", "/v1/models/", HTTPStatus.NOT_FOUND),
        ("GET", "/v1/chat/completions", HTTPStatus.METHOD_NOT_ALLOWED),
    ],
)
def test_v1_errors_have_openai_shape(gateway, method, path, status):
    with gateway.client() as client:
        response = client.request(method, path, json={})
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_v1_unsupported_media_type_has_openai_shape(gateway):
    with gateway.client() as client:
        response = client.post(
            "/v1/chat/completions", content=b"x", headers={"Content-Type": "text/plain"}
        )
    assert response.status_code == HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_v1_body_too_large_has_openai_shape(gateways, upstream):
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
        SERVER__MAX_BODY_BYTES="2000",
    )
    body = {"model": "fake-llm", "messages": [{"role": "user", "content": "x" * 5000}]}
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body, headers={"X-API-Key": API_KEY}
    )
    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert response.json()["error"]["code"] == "request_too_large"


def test_denied_fields_are_refused(gateways, upstream):
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
        OPENAI__DENIED_FIELDS="guided_grammar, logit_bias",
    )
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="fake-llm", messages=QUESTION, extra_body={"guided_grammar": "root ::= x"}
            )
    assert caught.value.body["param"] == "guided_grammar"
    assert upstream.requests == []


# --- LangChain, pydantic-ai, litellm ----------------------------------------------------------


def test_langchain_bind_tools_and_structured_output(gateway, upstream):
    from langchain_openai import ChatOpenAI

    http = httpx.Client()  # closed at the end, unlike the one ChatOpenAI would cache
    model = ChatOpenAI(
        model="fake-llm",
        base_url=f"{gateway.url}/v1",
        api_key=API_KEY,
        max_retries=0,
        http_client=http,
    )
    upstream.behave(tool_calls=PARIS_CALL)
    message = model.bind_tools([WEATHER_TOOL]).invoke("What is the weather in Paris?")
    assert message.tool_calls[0]["name"] == "get_weather"
    assert message.tool_calls[0]["args"] == {"city": "Paris"}
    assert upstream.last_request.body["tools"] == [WEATHER_TOOL]

    upstream.behave(tool_calls=[{"name": "Weather", "arguments": '{"city": "Paris"}'}])
    structured = model.with_structured_output(Weather, method="function_calling")
    assert structured.invoke("Weather?") == Weather(city="Paris")
    sent = upstream.last_request.body
    assert sent["tools"][0]["function"]["name"] == "Weather"
    assert sent["tool_choice"]["function"]["name"] == "Weather"
    http.close()


def test_pydantic_ai_default_output(gateway, upstream):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    async def run() -> Weather:
        async with openai.AsyncOpenAI(
            base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0
        ) as client:
            provider = OpenAIProvider(openai_client=client)
            agent = Agent(OpenAIChatModel("fake-llm", provider=provider), output_type=Weather)
            return (await agent.run("Which city?")).output

    upstream.behave(tool_calls=[{"name": "final_result", "arguments": '{"city": "Paris"}'}])
    assert asyncio.run(run()) == Weather(city="Paris")
    assert upstream.last_request.body["tools"][0]["function"]["name"] == "final_result"


def test_litellm_with_tools(gateway, upstream, monkeypatch):
    # Its price list from the package, not from GitHub.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    upstream.behave(tool_calls=PARIS_CALL)
    # litellm's own cached HTTP clients outlive the test; this one is closed when it ends.
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0) as client:
        answer = litellm.completion(
            model="openai/fake-llm",
            api_base=f"{gateway.url}/v1",
            api_key=API_KEY,
            messages=QUESTION,
            tools=[WEATHER_TOOL],
            client=client,
        )
    call = answer.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Paris"},
    )
    assert upstream.last_request.body["tools"] == [WEATHER_TOOL]


def test_sdk_streamed_strict_tool_arguments_are_checked(sdk, upstream):
    strict = {"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}
    upstream.behave(tool_calls=[{"name": "get_weather", "arguments": '{"town": "Paris"}'}])
    stream = sdk.chat.completions.create(
        model="fake-llm", messages=QUESTION, tools=[strict], stream=True
    )
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert "strict schema" in caught.value.message
    upstream.behave(tool_calls=PARIS_CALL)
    chunks = list(
        sdk.chat.completions.create(
            model="fake-llm", messages=QUESTION, tools=[strict], stream=True
        )
    )
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# --- instructor -------------------------------------------------------------------------------


def test_instructor_default_mode_is_a_forced_tool_call(sdk, upstream):
    import instructor

    client = instructor.from_openai(sdk)  # Mode.TOOLS, instructor's default
    upstream.behave(tool_calls=[{"name": "Weather", "arguments": '{"city": "Paris"}'}])
    answer = client.chat.completions.create(
        model="fake-llm", response_model=Weather, messages=QUESTION, max_retries=0
    )
    assert answer.model_dump() == {"city": "Paris"}
    sent = upstream.last_request.body
    assert sent["tools"][0]["function"]["name"] == "Weather"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "Weather"}}


def test_instructor_reasks_after_a_validation_error(sdk, upstream):
    import instructor

    client = instructor.from_openai(sdk, mode=instructor.Mode.JSON)
    # The first answer is valid JSON but not a Weather; instructor asks again with the error.
    upstream.behave(contents=['{"town": "Paris"}', '{"city": "Paris"}'])
    answer = client.chat.completions.create(
        model="fake-llm", response_model=Weather, messages=QUESTION, max_retries=1
    )
    assert answer.model_dump() == {"city": "Paris"}
    assert len(upstream.requests) == 2
    assert upstream.requests[0].body["response_format"] == {"type": "json_object"}
    retry_messages = json.dumps(upstream.requests[1].body["messages"])
    assert "city" in retry_messages and "Field required" in retry_messages


def test_instructor_streams_partial_objects_from_tool_call_deltas(gateway, upstream):
    import instructor

    upstream.behave(tool_calls=[{"name": "Weather", "arguments": '{"city": "Paris"}'}])

    async def run() -> list:
        async with openai.AsyncOpenAI(
            base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0
        ) as sdk_client:
            client = instructor.from_openai(sdk_client)
            stream = client.chat.completions.create_partial(
                model="fake-llm", response_model=Weather, messages=QUESTION, max_retries=0
            )
            return [partial async for partial in stream]

    partials = asyncio.run(run())
    assert upstream.last_request.body["stream"] is True
    assert partials[-1].city == "Paris"
    assert len(partials) >= 2  # the arguments arrived in pieces
