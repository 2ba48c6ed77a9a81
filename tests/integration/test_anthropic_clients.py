"""
Anthropic's clients, unchanged, against /v1/messages of the real server and the fake upstream
(which answers tool calls the way vLLM does). Each test checks what the client got and the
exact chat request the model server received for the translation.
"""

import json
import os
import shutil
import subprocess
from http import HTTPStatus
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.conftest import API_KEY
from tests.integration.test_teams_gateway import ledger_rows, manage, prefix_of, wait_for

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": WEATHER_SCHEMA,
}
CHAT_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": WEATHER_SCHEMA,
        "description": "The weather in a city.",
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
# Quotes, escapes, unicode and nesting: every byte must arrive.
TRICKY_ARGUMENTS = (
    '{"city": "Paris \\"Île-de-France\\" \\u00e9t\\u00e9 ✓", "days": 3, '
    '"nested": {"list": [1, 2.5, null, true], "text": "a\\nb\\\\c"}}'
)


@pytest.fixture
def anthropic_gateway(gateways, upstream):
    """The fake upstream's models, with every claude-* name mapped onto the text model."""
    return gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
        TEXT_MODEL__API_KEY="upstream-secret-token",
        IMAGE_MODEL__BASE_URL=upstream.url + "/v1",
        IMAGE_MODEL__MODEL_NAME="fake-vlm",
        LLMAPI_MODEL_PATTERNS="claude-*haiku*=fake-vlm,claude-*=fake-llm",
        ANTHROPIC__PING_INTERVAL="0.05",
    )


@pytest.fixture
def client(anthropic_gateway):
    with anthropic.Anthropic(
        base_url=anthropic_gateway.url, api_key=API_KEY, max_retries=0
    ) as client:
        yield client


def test_create_answers_a_message_and_sends_the_chat_request(client, upstream):
    message = client.messages.create(
        model="fake-llm",
        max_tokens=100,
        messages=QUESTION,
        # This SDK release has no sampling arguments; older ones and other clients send them.
        extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 40},
        stop_sequences=["\n\nHuman:"],
        metadata={"user_id": "alice"},
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "The capital of France is Paris."
    assert message.stop_reason == "end_turn"
    assert message.model == "fake-llm"
    assert message.usage.input_tokens == 6
    assert message.usage.output_tokens == 6
    assert upstream.last_request.body == {
        "model": "fake-llm",
        "messages": QUESTION,
        "max_tokens": 100,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["\n\nHuman:"],
    }


def test_stream_get_final_message(client, upstream):
    with client.messages.stream(model="fake-llm", max_tokens=50, messages=QUESTION) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) == 6
    assert "".join(texts) == "The capital of France is Paris."
    assert final.content[0].text == "The capital of France is Paris."
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (6, 6)
    assert upstream.last_request.body == {
        "model": "fake-llm",
        "messages": QUESTION,
        "max_tokens": 50,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_claude_names_map_onto_catalog_models(client, upstream):
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=QUESTION)
    assert message.model == "fake-llm"
    haiku = client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=QUESTION)
    assert haiku.model == "fake-vlm"
    assert upstream.last_request.body["model"] == "fake-vlm"


def test_max_tokens_is_lowered_to_the_model_limit(client, upstream):
    # The SDK wants a timeout of its own for so large a max_tokens unless streaming.
    client.messages.create(model="claude-opus-4-1", max_tokens=32000, messages=QUESTION, timeout=30)
    assert upstream.last_request.body["max_tokens"] == 2048


def test_tools_whole_answer_has_tool_use_with_input_object(client, upstream):
    upstream.behave(tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}])
    message = client.messages.create(
        model="fake-llm",
        max_tokens=100,
        messages=QUESTION,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert (block.type, block.id, block.name, block.input) == (
        "tool_use",
        "call_0",
        "get_weather",
        {"city": "Paris"},
    )
    assert upstream.last_request.body == {
        "model": "fake-llm",
        "messages": QUESTION,
        "max_tokens": 100,
        "tools": [CHAT_WEATHER_TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ({"type": "auto"}, "auto"),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
def test_tool_choice_translations(client, upstream, choice, sent):
    client.messages.create(
        model="fake-llm", max_tokens=5, messages=QUESTION, tools=[WEATHER_TOOL], tool_choice=choice
    )
    assert upstream.last_request.body["tool_choice"] == sent


def test_tool_choice_none_sends_no_tools(client, upstream):
    client.messages.create(
        model="fake-llm",
        max_tokens=5,
        messages=QUESTION,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "none"},
    )
    assert "tools" not in upstream.last_request.body
    assert "tool_choice" not in upstream.last_request.body


def test_tool_result_round_trip(client, upstream):
    conversation = [
        *QUESTION,
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "call_0",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Nice"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_0", "content": "18 C, sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_1",
                    "content": [{"type": "text", "text": "no station"}],
                    "is_error": True,
                },
                {"type": "text", "text": "And so?"},
            ],
        },
    ]
    upstream.behave(content="It is 18 C and sunny in Paris.")
    message = client.messages.create(
        model="fake-llm", max_tokens=100, messages=conversation, tools=[WEATHER_TOOL]
    )
    assert message.content[0].text == "It is 18 C and sunny in Paris."
    assert upstream.last_request.body["messages"] == [
        *QUESTION,
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Nice"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "18 C, sunny"},
        {"role": "tool", "tool_call_id": "call_1", "content": "Error: no station"},
        {"role": "user", "content": "And so?"},
    ]


def test_streamed_tool_use_arguments_in_many_small_chunks_arrive_whole(client, upstream):
    upstream.behave(
        tool_calls=[
            {"name": "get_weather", "arguments": TRICKY_ARGUMENTS},
            {"name": "get_weather", "arguments": '{"city": "Nice"}'},
        ],
        argument_piece=1,
    )
    with client.messages.stream(
        model="fake-llm", max_tokens=100, messages=QUESTION, tools=[WEATHER_TOOL]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    fragments: dict[int, str] = {}
    for event in events:
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
            fragments[event.index] = fragments.get(event.index, "") + event.delta.partial_json
    assert fragments == {0: TRICKY_ARGUMENTS, 1: '{"city": "Nice"}'}
    assert len([e for e in events if e.type == "content_block_delta"]) == len(
        TRICKY_ARGUMENTS
    ) + len('{"city": "Nice"}')
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.id, b.name) for b in final.content] == [
        ("tool_use", "call_0", "get_weather"),
        ("tool_use", "call_1", "get_weather"),
    ]
    assert final.content[0].input == json.loads(TRICKY_ARGUMENTS)
    assert final.content[1].input == {"city": "Nice"}


def test_system_blocks_with_cache_control(client, upstream):
    client.messages.create(
        model="fake-llm",
        max_tokens=10,
        system=[
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "there"},
                ],
            }
        ],
    )
    assert upstream.last_request.body["messages"] == [
        {"role": "system", "content": "You are terse.\n\nAnswer in French."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}],
        },
    ]


def test_thinking_from_reasoning_content(client, upstream):
    upstream.behave(reasoning="Paris is in France.")
    message = client.messages.create(
        model="fake-llm",
        max_tokens=2000,
        messages=QUESTION,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Paris is in France."
    with client.messages.stream(
        model="fake-llm",
        max_tokens=2000,
        messages=QUESTION,
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Paris is in France."
    assert final.content[1].text == "The capital of France is Paris."
    assert "thinking" not in upstream.last_request.body


def test_count_tokens_by_the_server_tokenizer(client, upstream):
    count = client.messages.count_tokens(model="fake-llm", messages=QUESTION, tools=[WEATHER_TOOL])
    assert count.input_tokens == len(json.dumps([QUESTION, [CHAT_WEATHER_TOOL]]).split())
    assert upstream.last_request.path == "/tokenize"
    assert upstream.last_request.body == {
        "model": "fake-llm",
        "messages": QUESTION,
        "tools": [CHAT_WEATHER_TOOL],
    }


def test_count_tokens_on_llama_cpp_and_without_a_tokenizer(anthropic_gateway, upstream):
    body = {"model": "fake-llm", "messages": QUESTION}
    with anthropic_gateway.client() as http:
        upstream.behave(tokenizer="llama.cpp")
        answer = http.post("/v1/messages/count_tokens", json=body)
        assert answer.status_code == HTTPStatus.OK
        assert answer.json() == {"input_tokens": 7}  # "<s>" and the question's six words
        assert answer.headers["X-LLMAPI-Token-Count"] == "tokenizer"
        upstream.behave(tokenizer="none")
        answer = http.post("/v1/messages/count_tokens", json=body)
    assert answer.status_code == HTTPStatus.OK
    assert answer.json()["estimated"] is True
    assert answer.json()["input_tokens"] > 0
    assert answer.headers["X-LLMAPI-Token-Count"] == "estimate"


def test_bad_key_is_an_authentication_error(anthropic_gateway):
    with anthropic.Anthropic(
        base_url=anthropic_gateway.url, api_key="wrong-key", max_retries=0
    ) as bad:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            bad.messages.create(model="fake-llm", max_tokens=5, messages=QUESTION)
    assert caught.value.status_code == HTTPStatus.UNAUTHORIZED
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "authentication_error"
    assert "wrong-key" not in json.dumps(caught.value.body)


def test_bearer_token_is_accepted(anthropic_gateway, upstream):
    with anthropic.Anthropic(
        base_url=anthropic_gateway.url, auth_token=API_KEY, max_retries=0
    ) as bearer:
        message = bearer.messages.create(model="fake-llm", max_tokens=5, messages=QUESTION)
    assert message.content[0].text == "The capital of France is Paris."


def test_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="gpt-9", max_tokens=5, messages=QUESTION)
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert "gpt-9" in caught.value.body["error"]["message"]


def test_missing_max_tokens_names_the_field(anthropic_gateway):
    with anthropic_gateway.client() as http:
        answer = http.post("/v1/messages", json={"model": "fake-llm", "messages": QUESTION})
    assert answer.status_code == HTTPStatus.BAD_REQUEST
    error = answer.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in error["error"]["message"]


def test_a_conversation_over_the_character_limit_is_refused(anthropic_gateway, upstream):
    long_result = {"type": "tool_result", "tool_use_id": "t", "content": "x" * 1_000_001}
    body = {
        "model": "fake-llm",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [long_result]}],
    }
    with anthropic_gateway.client() as http:
        answer = http.post("/v1/messages", json=body)
    assert answer.status_code == HTTPStatus.BAD_REQUEST
    assert "SERVER__MAX_TOTAL_CHARS" in answer.json()["error"]["message"]
    assert upstream.requests == []


def test_image_url_source_is_refused_without_a_fetch(anthropic_gateway, upstream):
    image = {"type": "image", "source": {"type": "url", "url": "http://169.254.169.254/x.png"}}
    body = {
        "model": "fake-vlm",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [image]}],
    }
    with anthropic_gateway.client() as http:
        answer = http.post("/v1/messages", json=body)
    assert answer.status_code == HTTPStatus.BAD_REQUEST
    assert "messages[0].content[0].source" in answer.json()["error"]["message"]
    assert upstream.requests == []


def test_upstream_failure_is_an_api_error(client, upstream):
    upstream.behave(status=500)
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="fake-llm", max_tokens=5, messages=QUESTION)
    assert caught.value.status_code == HTTPStatus.BAD_GATEWAY
    assert caught.value.body["error"]["type"] == "api_error"
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_upstream_rate_limit_is_a_rate_limit_error_with_retry_after(client, upstream):
    upstream.behave(status=429, headers={"Retry-After": "30"})
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="fake-llm", max_tokens=5, messages=QUESTION)
    assert caught.value.body["error"]["type"] == "rate_limit_error"


def test_stream_failing_midway_ends_with_an_error_event(anthropic_gateway, upstream):
    upstream.behave(drop_after=2)
    body = {"model": "fake-llm", "max_tokens": 5, "messages": QUESTION, "stream": True}
    with anthropic_gateway.client() as http:
        answer = http.post("/v1/messages", json=body)
    events = [
        line[len("event: ") :] for line in answer.text.splitlines() if line.startswith("event: ")
    ]
    assert events[0] == "message_start"
    assert events[-1] == "error"
    assert "message_stop" not in events
    last = json.loads(answer.text.strip().splitlines()[-1][len("data: ") :])
    assert last["type"] == "error"
    assert last["error"]["type"] == "api_error"


def test_pings_while_the_server_is_slow(anthropic_gateway, upstream):
    upstream.behave(chunks=["Slow", " answer"], chunk_interval=1.0)
    body = {"model": "fake-llm", "max_tokens": 5, "messages": QUESTION, "stream": True}
    with anthropic_gateway.client() as http:
        answer = http.post("/v1/messages", json=body)
    events = [
        line[len("event: ") :] for line in answer.text.splitlines() if line.startswith("event: ")
    ]
    first_text = events.index("content_block_delta")
    # One ping right after message_start, as Anthropic sends; more while the server is silent.
    assert events[:2] == ["message_start", "ping"]
    assert "ping" in events[first_text:]
    assert events[-2:] == ["message_delta", "message_stop"]


def test_headers_and_beta_query_are_accepted(anthropic_gateway, upstream):
    with httpx.Client(base_url=anthropic_gateway.url, timeout=30) as http:
        answer = http.post(
            "/v1/messages?beta=true",
            headers={
                "x-api-key": API_KEY,
                "anthropic-version": "2023-06-01",
                "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
            },
            json={
                "model": "claude-sonnet-4-5",
                "max_tokens": 5,
                "messages": QUESTION,
                "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
                "output_config": {"effort": "medium"},
            },
        )
    assert answer.status_code == HTTPStatus.OK
    assert answer.json()["content"][0]["text"] == "The capital of France is Paris."


# --- JavaScript clients: Claude Code and the Vercel AI SDK (tests/package.json) ----------------

NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"


def _node_client(name: str) -> Path:
    path = NODE_MODULES / name
    assert path.exists(), f"{path} is missing: run `npm ci --prefix tests` (scripts/test does)"
    return path


def test_claude_code_prints_the_model_answer(anthropic_gateway, upstream, tmp_path):
    claude = _node_client(".bin/claude")
    upstream.behave(content="PONG from the team model")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": anthropic_gateway.url,
        "ANTHROPIC_API_KEY": API_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    done = subprocess.run(
        [str(claude), "-p", "Say pong."],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "PONG from the team model" in done.stdout
    sent = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert sent, "Claude Code's request never reached the model server"
    body = sent[-1]
    assert body["model"] == "fake-llm"  # its claude-* name, mapped
    assert body["stream"] is True
    assert body["max_tokens"] == 2048  # its 32,000 or more, lowered to the model's limit
    assert body["messages"][0]["role"] == "system"
    # Its system blocks joined, without the billing metadata meant for Anthropic's servers.
    assert body["messages"][0]["content"].startswith("You are ")
    assert "x-anthropic-billing-header" not in json.dumps(body)
    assert {tool["function"]["name"] for tool in body["tools"]} >= {"Bash", "Read", "Edit"}
    assert any(
        message["role"] == "user" and "Say pong." in json.dumps(message)
        for message in body["messages"]
    )


def _ai_sdk(gateway, mode: str) -> dict:
    _node_client("@ai-sdk/anthropic")
    script = Path(__file__).resolve().parents[1] / "clients" / "ai_sdk_anthropic.mjs"
    env = {**os.environ, "LLMAPI_URL": gateway.url, "LLMAPI_KEY": API_KEY}
    done = subprocess.run(
        [shutil.which("node") or "node", str(script), mode],  # noqa: S607
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_vercel_ai_sdk_stream_text(anthropic_gateway, upstream):
    got = _ai_sdk(anthropic_gateway, "stream")
    assert got["text"] == "The capital of France is Paris."
    assert len(got["parts"]) == 6
    assert got["finishReason"] == "stop"
    assert got["usage"]["outputTokens"] == 6
    body = upstream.last_request.body
    assert body["model"] == "fake-llm"
    assert body["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert body["max_tokens"] == 100


def test_vercel_ai_sdk_tool_loop(anthropic_gateway, upstream):
    upstream.behave(
        tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}],
        tool_calls_first=1,
        content="It is 18 C and sunny in Paris.",
    )
    got = _ai_sdk(anthropic_gateway, "tools")
    assert got == {"calls": ["Paris"], "text": "It is 18 C and sunny in Paris.", "steps": 2}
    first, second = (r.body for r in upstream.requests)
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert second["messages"][1:] == [
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
        {"role": "tool", "tool_call_id": "call_0", "content": "18 C and sunny in Paris"},
    ]


def test_oversized_body_is_request_too_large(anthropic_gateway):
    with anthropic_gateway.client() as http:
        answer = http.post(
            "/v1/messages",
            content=b'{"model": "fake-llm", "messages": [], "pad": "' + b"x" * 5_000_000 + b'"}',
            headers={"Content-Type": "application/json"},
        )
    assert answer.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert answer.json()["error"]["type"] == "request_too_large"


def test_wrong_method_and_bad_json_keep_the_shape(anthropic_gateway):
    with anthropic_gateway.client() as http:
        wrong = http.get("/v1/messages")
        bad = http.post(
            "/v1/messages", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert wrong.status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert wrong.json()["type"] == "error"
    assert bad.status_code == HTTPStatus.BAD_REQUEST
    assert bad.json()["error"]["type"] == "invalid_request_error"


def test_claude_code_runs_a_tool_through_the_gateway(anthropic_gateway, upstream, tmp_path):
    claude = _node_client(".bin/claude")
    home = tmp_path / "home"
    home.mkdir()
    (home / "note.txt").write_text("The secret word is heliotrope.\n")
    arguments = json.dumps({"file_path": str(home / "note.txt")})
    upstream.behave(
        tool_calls=[{"name": "Read", "arguments": arguments}],
        tool_calls_first=1,
        argument_piece=3,
        content="The note says heliotrope.",
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": anthropic_gateway.url,
        "ANTHROPIC_API_KEY": API_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    done = subprocess.run(
        [str(claude), "-p", "What does note.txt say?", "--allowedTools", "Read"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "The note says heliotrope." in done.stdout
    turns = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]
    call, result = turns[-1]["messages"][-2:]
    assert call["role"] == "assistant"
    assert call["tool_calls"][0]["function"] == {"name": "Read", "arguments": arguments}
    assert result["role"] == "tool"
    assert result["tool_call_id"] == "call_0"
    assert "heliotrope" in result["content"]


# --- Keys, quotas and the ledger ------------------------------------------------------------


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    return tmp_path_factory.mktemp("anthropic-teams") / "gateway.sqlite3"


@pytest.fixture
def teams_gateway(gateways, upstream, database):
    """A gateway whose keys and ledger live in `database`, read back by the test."""
    return gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
        DATABASE__SQLITE_PATH=str(database),
        USAGE__FLUSH_INTERVAL="0.2",
    )


def test_claude_code_sized_request_fits_an_ordinary_quota_and_is_in_the_ledger(
    teams_gateway, database
):
    key = manage(
        database,
        "create_api_key",
        "--team",
        "agents",
        "--name",
        "coder",
        "--tokens-per-minute",
        "10000",
    )
    with anthropic.Anthropic(base_url=teams_gateway.url, api_key=key, max_retries=0) as client:
        with client.messages.stream(
            model="fake-llm",
            max_tokens=32000,
            messages=QUESTION,
            thinking={"type": "enabled", "budget_tokens": 31999},
        ) as stream:
            final = stream.get_final_message()
    assert final.content[-1].text == "The capital of France is Paris."
    rows = wait_for(lambda: ledger_rows(database, prefix_of(key)))
    assert [(row[0], row[1]) for row in rows] == [("v1/messages", 200)]
    assert rows[0][3] == 6  # the completion tokens the server counted


def test_model_outside_the_keys_scope_is_not_found(teams_gateway, database):
    key = manage(
        database, "create_api_key", "--team", "agents", "--name", "scoped", "--models", "other"
    )
    with anthropic.Anthropic(base_url=teams_gateway.url, api_key=key, max_retries=0) as client:
        with pytest.raises(anthropic.NotFoundError) as caught:
            client.messages.create(model="fake-llm", max_tokens=5, messages=QUESTION)
        with pytest.raises(anthropic.NotFoundError):
            client.messages.count_tokens(model="fake-llm", messages=QUESTION)
    assert caught.value.body["error"]["type"] == "not_found_error"


def test_client_going_away_closes_the_upstream_stream(anthropic_gateway, upstream):
    upstream.behave(chunks=[f"word{i} " for i in range(200)], chunk_interval=0.05)
    body = {"model": "fake-llm", "max_tokens": 500, "messages": QUESTION, "stream": True}
    with anthropic_gateway.client() as http:
        with http.stream("POST", "/v1/messages", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("event: content_block_delta"):
                    break
    assert wait_for(lambda: upstream.disconnects), "the upstream stream stayed open"
    assert wait_for(lambda: upstream.open_streams == 0)


@pytest.mark.local_model
def test_anthropic_sdk_talks_to_the_embedded_model(gateways):
    local = gateways.get(
        TEXT_MODEL__BASE_URL="", TEXT_MODEL__MODEL_NAME="", TEXT_MODEL__QUEUE_TIMEOUT="0"
    )
    with anthropic.Anthropic(base_url=local.url, api_key=API_KEY, max_retries=0) as client:
        message = client.messages.create(
            model="smollm2-135m-instruct", max_tokens=16, messages=QUESTION
        )
        with client.messages.stream(
            model="smollm2-135m-instruct", max_tokens=16, messages=QUESTION
        ) as stream:
            final = stream.get_final_message()
        count = client.messages.with_raw_response.count_tokens(
            model="smollm2-135m-instruct", messages=QUESTION
        )
    assert message.content[0].text.strip()
    assert message.usage.output_tokens > 0
    assert final.content[0].text.strip()
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert count.headers["X-LLMAPI-Token-Count"] == "estimate"
    assert count.parse().input_tokens > 0


def test_stream_refused_before_its_first_byte_is_a_plain_error(client, upstream):
    upstream.behave(status=503)
    with pytest.raises(anthropic.InternalServerError) as caught:
        with client.messages.stream(model="fake-llm", max_tokens=5, messages=QUESTION) as stream:
            stream.get_final_message()
    assert caught.value.status_code == HTTPStatus.BAD_GATEWAY
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "api_error"
