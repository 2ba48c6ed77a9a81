"""Chat answers and chunks as Messages objects and events."""

import asyncio
import json

import pytest

from anthropic_compat.presenters import message_object, message_stream_frames
from inference.exceptions import UpstreamError, UpstreamProtocolError
from inference.services import ChatResult, RawChunk, StreamEnd


def chunk(delta: dict | None = None, finish: str | None = None, **extra) -> RawChunk:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish, **extra}
    return RawChunk({"model": "m", "choices": [choice]})


def events_of(frames: list[bytes]) -> list[dict]:
    return [json.loads(frame.split(b"data: ", 1)[1]) for frame in frames]


async def relay(items, *, thinking=False, stop_sequences=()) -> list[dict]:
    async def events():
        for item in items:
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, float):
                await asyncio.sleep(item)
                continue
            yield item

    frames = message_stream_frames(
        events(), model="m", stop_sequences=list(stop_sequences), thinking=thinking
    )
    return events_of([frame async for frame in frames])


def result(message: dict, finish="stop", usage=None, **choice) -> ChatResult:
    raw = {
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 3},
    }
    return ChatResult(
        response=message.get("content") or "", model="m", finish_reason=finish, usage=None, raw=raw
    )


async def test_a_stream_of_reasoning_text_and_two_calls(settings):
    settings.ANTHROPIC_PING_INTERVAL = 30
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    got = await relay(
        [
            chunk({"reasoning_content": "Hm"}),
            chunk({"content": "Let me see."}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c0", "function": {"name": "f", "arguments": ""}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "c1", "function": {"name": "g", "arguments": "{}"}}
                    ]
                }
            ),
            chunk(finish="tool_calls"),
            RawChunk({"choices": [], "usage": usage}),
            StreamEnd(model="m", finish_reason="tool_calls"),
        ],
        thinking=True,
    )
    assert [e["type"] for e in got] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert got[2]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert got[8] == {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "c0", "name": "f", "input": {}},
    }
    assert [e["delta"]["partial_json"] for e in got[9:11]] == ['{"a"', ": 1}"]
    assert got[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert got[-2]["usage"] == {"input_tokens": 6, "output_tokens": 5, "cache_read_input_tokens": 4}


async def test_reasoning_is_left_out_unless_thinking_was_asked(settings):
    settings.ANTHROPIC_PING_INTERVAL = 30
    got = await relay(
        [chunk({"reasoning_content": "Hm"}), chunk({"content": "Hi"}), chunk(finish="stop")]
    )
    starts = [e for e in got if e["type"] == "content_block_start"]
    assert starts == [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    ]
    assert [e["index"] for e in got if e["type"] == "content_block_delta"] == [0]


async def test_stop_sequence_named_by_the_server(settings):
    settings.ANTHROPIC_PING_INTERVAL = 30
    got = await relay(
        [chunk({"content": "Hi"}), chunk(finish="stop", stop_reason="END")], stop_sequences=["END"]
    )
    assert got[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


async def test_pings_while_nothing_arrives(settings):
    settings.ANTHROPIC_PING_INTERVAL = 0.01
    got = await relay([chunk({"content": "Hi"}), 0.2, chunk(finish="length")])
    types = [e["type"] for e in got]
    assert types.count("ping") >= 2  # the first, then at least one while the server was silent
    assert got[-2]["delta"]["stop_reason"] == "max_tokens"


async def test_failure_mid_stream_is_an_error_event(settings):
    settings.ANTHROPIC_PING_INTERVAL = 30
    got = await relay([chunk({"content": "Hi"}), UpstreamError("The server went away.")])
    assert got[-1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "The server went away."},
    }
    assert "message_stop" not in [e["type"] for e in got]


async def test_interleaved_calls_fail_rather_than_lose_bytes(settings):
    settings.ANTHROPIC_PING_INTERVAL = 30
    got = await relay(
        [
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}
                    ]
                }
            ),
            chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "b", "function": {"name": "g", "arguments": "{"}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
        ]
    )
    assert got[-1]["type"] == "error"
    assert "tool call" in got[-1]["error"]["message"]


def test_whole_answer_with_text_and_a_call():
    message = message_object(
        result(
            {
                "role": "assistant",
                "content": "Calling.",
                "reasoning_content": "Hm",
                "tool_calls": [
                    {
                        "id": "c0",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a": [1]}'},
                    }
                ],
            },
            finish="stop",  # some servers say "stop" after calling tools
        ),
        model="m",
        stop_sequences=[],
        thinking=False,
    )
    assert message["content"] == [
        {"type": "text", "text": "Calling."},
        {"type": "tool_use", "id": "c0", "name": "f", "input": {"a": [1]}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 10, "output_tokens": 3}
    assert message["id"].startswith("msg_")


def test_whole_answer_arguments_that_are_not_an_object_are_a_502():
    answer = result(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c0", "type": "function", "function": {"name": "f", "arguments": "[1"}}
            ],
        },
        finish="tool_calls",
    )
    with pytest.raises(UpstreamProtocolError, match="not a JSON object"):
        message_object(answer, model="m", stop_sequences=[], thinking=False)
