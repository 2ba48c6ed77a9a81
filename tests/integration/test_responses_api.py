"""
/v1/responses with the real openai SDK, unchanged, against the real server and a fake
chat-completions-only model server (tool calls answered the way vLLM streams them). Each test
checks what the client got and the exact chat request the model server received.
"""

import base64
import json
from http import HTTPStatus

import openai
import pytest
from pydantic import BaseModel

from tests.conftest import API_KEY, OTHER_KEY
from tests.images import image_bytes

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": WEATHER_PARAMETERS,
    "strict": True,
}
CHAT_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": WEATHER_PARAMETERS,
        "strict": True,
    },
}
ARGUMENTS = '{"city": "Paris", "unit": "celsius", "note": "caf\\u00e9 \\"quoted\\""}'
LOOSE_TOOL = {**WEATHER_TOOL, "strict": False, "parameters": {"type": "object"}}


@pytest.fixture
def sdk(gateway):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def other_sdk(gateway):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=OTHER_KEY, max_retries=0) as client:
        yield client


def test_create_with_instructions_and_a_string_input(sdk, upstream):
    response = sdk.responses.create(
        model="fake-llm",
        instructions="Answer briefly.",
        input="What is the capital of France?",
        max_output_tokens=50,
        temperature=0.2,
        metadata={"ticket": "42"},
    )
    assert response.output_text == "The capital of France is Paris."
    assert response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.metadata == {"ticket": "42"}
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens == 6
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert upstream.last_request.body == {
        "model": "fake-llm",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "max_tokens": 50,
        "temperature": 0.2,
    }


def test_stream_emits_the_documented_events_in_order(sdk, upstream):
    upstream.behave(content="Paris is nice.")
    with sdk.responses.stream(model="fake-llm", input="Tell me about Paris.") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        "Paris is nice."
    )
    assert final.output_text == "Paris is nice."
    assert final.usage.output_tokens == 3
    assert upstream.last_request.body == {
        "model": "fake-llm",
        "messages": [{"role": "user", "content": "Tell me about Paris."}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_function_tool_becomes_a_function_call(sdk, upstream):
    upstream.behave(tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}])
    response = sdk.responses.create(
        model="fake-llm",
        input="Weather in Paris?",
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    [call] = response.output
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.status) == ("call_0", "get_weather", "completed")
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert upstream.last_request.body == {
        "model": "fake-llm",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [CHAT_WEATHER_TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }


def test_streamed_arguments_in_many_pieces_come_out_whole_and_in_order(sdk, upstream):
    calls = [
        {"name": "get_weather", "arguments": ARGUMENTS},
        {"name": "get_weather", "arguments": '{"city": "Lyon"}'},
    ]
    upstream.behave(tool_calls=calls, argument_piece=1)
    with sdk.responses.stream(
        model="fake-llm", input="Weather in Paris and Lyon?", tools=[LOOSE_TOOL]
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 20
    first = "".join(d.delta for d in deltas if d.output_index == 0)
    assert first == ARGUMENTS
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [d.arguments for d in done] == [ARGUMENTS, '{"city": "Lyon"}']
    assert [item.call_id for item in final.output] == ["call_0", "call_1"]
    assert [item.arguments for item in final.output] == [ARGUMENTS, '{"city": "Lyon"}']
    kinds = [e.type for e in events if not e.type.endswith(".delta")]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_previous_response_id_with_function_call_output(sdk, upstream):
    upstream.behave(
        tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}],
        tool_calls_first=1,
        content="It is 18 C and sunny in Paris.",
    )
    first = sdk.responses.create(
        model="fake-llm",
        instructions="You are a weather bot.",
        input="Weather in Paris?",
        tools=[WEATHER_TOOL],
    )
    [call] = first.output
    second = sdk.responses.create(
        model="fake-llm",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"}],
        tools=[WEATHER_TOOL],
    )
    assert second.output_text == "It is 18 C and sunny in Paris."
    assert second.previous_response_id == first.id
    # The previous request's instructions are not carried over, as on OpenAI's API.
    assert upstream.last_request.body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
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
    ]


def test_a_stateless_history_of_items(sdk, upstream):
    history = [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
        },
        {
            "type": "function_call",
            "call_id": "call_a",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
        {"role": "user", "content": "Thanks. And tomorrow?"},
    ]
    sdk.responses.create(model="fake-llm", input=history, tools=[WEATHER_TOOL], store=False)
    assert upstream.last_request.body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "user", "content": "Thanks. And tomorrow?"},
    ]


def test_store_false_is_not_retrievable(sdk):
    response = sdk.responses.create(model="fake-llm", input="Hi", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)


def test_text_format_json_schema_is_a_checked_response_format(sdk, upstream):
    upstream.behave(content='{"city": "Paris"}')
    schema = {"type": "json_schema", "name": "place", "schema": WEATHER_PARAMETERS, "strict": True}
    response = sdk.responses.create(model="fake-llm", input="Where?", text={"format": schema})
    assert json.loads(response.output_text) == {"city": "Paris"}
    assert upstream.last_request.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": WEATHER_PARAMETERS, "strict": True},
    }


class Place(BaseModel):
    city: str


def test_sdk_parse_with_a_pydantic_model(sdk, upstream):
    upstream.behave(content='{"city": "Paris"}')
    parsed = sdk.responses.parse(model="fake-llm", input="Where?", text_format=Place)
    assert parsed.output_parsed == Place(city="Paris")
    sent = upstream.last_request.body["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "Place"
    assert sent["json_schema"]["strict"] is True


def test_a_refused_schema_is_a_400_naming_text_format(sdk, upstream):
    schema = {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(
            model="fake-llm",
            input="x",
            text={"format": {"type": "json_schema", "name": "x", "schema": schema}},
        )
    assert caught.value.body["param"] == "text.format"
    assert upstream.requests == []


def test_retrieve_input_items_and_delete(sdk, other_sdk, upstream):
    response = sdk.responses.create(
        model="fake-llm",
        input=[
            {"role": "user", "content": "First."},
            {"role": "user", "content": "Second."},
        ],
    )
    again = sdk.responses.retrieve(response.id)
    assert again.output_text == response.output_text
    assert again.id == response.id
    items = sdk.responses.input_items.list(response.id, order="asc")
    assert [item.content[0].text for item in items.data] == ["First.", "Second."]
    newest = sdk.responses.input_items.list(response.id, limit=1)
    assert [item.content[0].text for item in newest.data] == ["Second."]
    assert newest.has_more is True
    # Another key sees the same 404 as for an id that never existed.
    for client in (other_sdk,):
        with pytest.raises(openai.NotFoundError) as other:
            client.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.input_items.list(response.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError) as never:
        sdk.responses.retrieve("resp_" + "0" * 32)
    assert other.value.body["message"].replace(response.id, "X") == never.value.body[
        "message"
    ].replace("resp_" + "0" * 32, "X")
    with pytest.raises(openai.NotFoundError):
        other_sdk.responses.create(model="fake-llm", previous_response_id=response.id, input="x")
    sdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)


def test_missing_previous_response_is_a_404_that_says_so(sdk, upstream):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.responses.create(model="fake-llm", previous_response_id="resp_nope", input="x")
    assert "previous_response_id" in caught.value.body["message"]
    assert upstream.requests == []


def test_mid_stream_failure_ends_with_response_failed(sdk, upstream):
    upstream.behave(content="one two three four five", drop_after=2)
    with sdk.responses.stream(model="fake-llm", input="Count.") as stream:
        events = list(stream)
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed"
    assert events[-1].response.error.message
    assert "response.completed" not in [e.type for e in events]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        "one two "
    )
    stored = sdk.responses.retrieve(events[-1].response.id)
    assert stored.status == "failed"


def test_length_cut_is_incomplete(sdk, upstream):
    upstream.behave(content="A long answer cut", finish_reason="length")
    response = sdk.responses.create(model="fake-llm", input="Go on.", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    with sdk.responses.stream(model="fake-llm", input="Go on.", max_output_tokens=3) as stream:
        events = list(stream)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_streamed_reasoning_becomes_a_reasoning_item(sdk, upstream):
    upstream.behave(reasoning="The user asks.", content="Paris.")
    with sdk.responses.stream(model="fake-llm", input="Capital?") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.delta for e in events if e.type == "response.reasoning_text.delta"] == [
        "The ",
        "user ",
        "asks.",
    ]
    reasoning, message = final.output
    assert reasoning.type == "reasoning"
    assert reasoning.content[0].text == "The user asks."
    assert message.content[0].text == "Paris."


def test_hosted_tools_are_left_out_and_named_in_a_header(sdk, upstream):
    raw = sdk.responses.with_raw_response.create(
        model="fake-llm",
        input="Search the web.",
        tools=[
            {"type": "web_search"},
            LOOSE_TOOL,
            {
                "type": "namespace",
                "name": "crm",
                "description": "CRM tools",
                "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
            },
        ],
    )
    assert raw.headers["X-LLMAPI-Skipped-Tools"] == "web_search"
    assert raw.parse().output_text
    assert [tool["function"]["name"] for tool in upstream.last_request.body["tools"]] == [
        "get_weather",
        "crm__lookup",
    ]


def test_a_namespaced_call_comes_back_with_its_namespace(sdk, upstream):
    upstream.behave(tool_calls=[{"name": "crm__lookup", "arguments": "{}"}])
    namespace = {
        "type": "namespace",
        "name": "crm",
        "description": "CRM tools",
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
    }
    response = sdk.responses.create(model="fake-llm", input="Look up.", tools=[namespace])
    call = response.output[0]
    assert (call.name, call.namespace) == ("lookup", "crm")


def test_an_input_image_reaches_the_image_model_as_a_data_url(sdk, upstream):
    data_url = "data:image/png;base64," + base64.b64encode(image_bytes("PNG")).decode()
    sdk.responses.create(
        model="fake-vlm",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": data_url},
                ],
            }
        ],
    )
    content = upstream.last_request.body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "What is this?"}
    assert content[1]["type"] == "image_url"
    assert content[1]["image_url"]["url"].startswith("data:image/")


def test_an_image_url_is_refused_naming_the_field(gateway, upstream):
    with gateway.client() as client:
        answer = client.post(
            "/v1/responses",
            json={
                "model": "fake-vlm",
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_image", "image_url": "http://169.254.169.254/"}
                        ],
                    }
                ],
            },
        )
    assert answer.status_code == HTTPStatus.BAD_REQUEST
    assert answer.json()["error"]["param"] == "input[0].content[0].image_url"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "fake-llm"}, "input"),
        ({"model": "fake-llm", "input": 3}, "input"),
        ({"model": "fake-llm", "input": [{"type": "bogus"}]}, "input[0].type"),
        ({"model": "fake-llm", "input": [{"role": "king", "content": "x"}]}, "input[0].role"),
        ({"model": "fake-llm", "input": "x", "temperature": "hot"}, "temperature"),
        ({"model": "fake-llm", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "fake-llm", "input": "x", "background": True}, "background"),
        ({"model": "fake-llm", "input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"model": "fake-llm", "input": "x", "metadata": {"k": 1}}, "metadata"),
    ],
)
def test_hostile_input_is_a_400_naming_the_field(gateway, upstream, body, param):
    with gateway.client() as client:
        answer = client.post("/v1/responses", json=body)
    assert answer.status_code == HTTPStatus.BAD_REQUEST, answer.text
    assert answer.json()["error"]["param"] == param
    assert upstream.requests == []


def test_unknown_model_is_a_404(sdk):
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="no-such-model", input="x")


# --- a model whose servers speak the Responses API: passed through --------------------------


@pytest.fixture
def native_sdk(gateways, upstream, tmp_path_factory):
    catalog = tmp_path_factory.mktemp("native") / "models.yaml"
    catalog.write_text(
        "models:\n"
        "  native-llm:\n"
        f"    servers: [{upstream.url}/v1]\n"
        "    upstream_name: gpt-native\n"
        "    capabilities: [chat, tools, responses]\n"
    )
    gateway = gateways.get(
        LLMAPI_MODELS_FILE=str(catalog),
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
    )
    keys = (API_KEY, OTHER_KEY)
    clients = [
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0) for key in keys
    ]
    yield clients
    for client in clients:
        client.close()


def test_native_server_gets_the_request_as_sent(native_sdk, upstream):
    sdk, other = native_sdk
    body = {
        "model": "native-llm",
        "input": [{"role": "user", "content": "Hi"}],
        "tools": [{"type": "web_search"}],
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"summary": "auto"},
        "store": True,
    }
    response = sdk.responses.create(**body)
    assert response.output_text == "The capital of France is Paris."
    assert response.usage.input_tokens_details.cached_tokens == 3
    sent = upstream.last_request
    assert sent.path == "/v1/responses"
    assert sent.body == {**body, "model": "gpt-native"}
    # The gateway keeps who made it: the same key continues and reads it, another cannot.
    assert sdk.responses.retrieve(response.id).output_text == response.output_text
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="native-llm", previous_response_id=response.id, input="x")
    sdk.responses.create(model="native-llm", previous_response_id=response.id, input="More")
    assert upstream.last_request.body["previous_response_id"] == response.id


def test_native_stream_is_passed_through_event_by_event(native_sdk, upstream):
    sdk, _ = native_sdk
    with sdk.responses.stream(model="native-llm", input="Hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.type for e in events][:2] == ["response.created", "response.output_item.added"]
    assert events[-1].type == "response.completed"
    assert final.output_text == "The capital of France is Paris."
    assert upstream.last_request.body == {"model": "gpt-native", "input": "Hi", "stream": True}
    assert sdk.responses.retrieve(final.id).status == "completed"


def test_a_server_failure_before_the_answer_is_a_502_with_a_detail(sdk, upstream):
    upstream.behave(status=500)
    with pytest.raises(openai.APIStatusError) as whole:
        sdk.responses.create(model="fake-llm", input="x")
    assert whole.value.status_code == HTTPStatus.BAD_GATEWAY
    assert whole.value.body["message"]
    with pytest.raises(openai.APIStatusError) as streamed:
        with sdk.responses.stream(model="fake-llm", input="x") as stream:
            list(stream)
    assert streamed.value.status_code == HTTPStatus.BAD_GATEWAY
