"""
The Messages shapes of an answer: a `message` object, or its stream of events.

A stream is `message_start`, then for each content block (thinking, text, tool_use, in the
order the server produced them) `content_block_start`, its `content_block_delta`s and
`content_block_stop`, then `message_delta` (stop_reason, usage) and `message_stop`, with a
`ping` whenever the server stays silent for ANTHROPIC__PING_INTERVAL seconds. A tool call's
arguments are relayed as `input_json_delta`s holding exactly the server's fragments, so they
concatenate to exactly what the server sent. A stream that fails mid-way ends with an
`error` event in Anthropic's shape.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from django.conf import settings

from anthropic_compat.exceptions import error_body
from api.streaming import stream_failure
from gateway.calls import ChatResult, RawChunk, StreamEvent
from inference.exceptions import UpstreamProtocolError
from translation import chat_events

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def stop_reason(
    finish_reason: str | None, *, matched: Any, stop_sequences: list[str], tool_calls: int
) -> tuple[str, str | None]:
    """Anthropic's stop_reason and stop_sequence for a chat finish_reason."""
    if tool_calls:
        return "tool_use", None  # some servers say "stop" after calling tools
    # vLLM names the stop string that ended the answer in the choice's `stop_reason`.
    if finish_reason == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return STOP_REASONS.get(finish_reason or "stop", "end_turn"), None


def usage_object(usage: chat_events.Usage | None) -> dict[str, int]:
    """Anthropic's usage: cache reads apart from input_tokens, where the server counts them."""
    usage = usage or chat_events.Usage()
    prompt = usage.input_tokens or 0
    answer = {"input_tokens": prompt, "output_tokens": usage.output_tokens or 0}
    cached = usage.cached_tokens
    if cached is not None and 0 <= cached <= prompt:
        answer["input_tokens"] = prompt - cached
        answer["cache_read_input_tokens"] = cached
    return answer


def _matched_stop(chunk: Any) -> Any:
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0].get("stop_reason")
    return None


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as the object Anthropic's `input` is; anything else is the server's fault."""
    if not arguments.strip():
        return {}  # a call without arguments
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamProtocolError(
            f"The model server's tool call arguments are not a JSON object: {arguments[:200]!r}"
        )
    return value


class MessageEvents:
    """
    Chat events in (`translation.chat_events`), Messages stream events out. Blocks are
    numbered anew: reasoning is left out unless the request asked for thinking.
    """

    def __init__(self, *, stop_sequences: list[str], thinking: bool) -> None:
        self.stop_sequences = stop_sequences
        self.thinking = thinking
        self.blocks: dict[int, int] = {}  # a chat part's index -> its content block's index
        self.matched: Any = None

    def _start(self, part: int, block: dict[str, Any]) -> dict[str, Any]:
        self.blocks[part] = len(self.blocks)
        return {"type": "content_block_start", "index": self.blocks[part], "content_block": block}

    def _delta(self, part: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        if part not in self.blocks:
            return []
        return [{"type": "content_block_delta", "index": self.blocks[part], "delta": delta}]

    def translate(self, event: chat_events.ChatEvent) -> list[dict[str, Any]]:
        match event:
            case chat_events.TextStarted(index=part) | chat_events.RefusalStarted(index=part):
                return [self._start(part, {"type": "text", "text": ""})]
            case (
                chat_events.TextDelta(index=part, text=text)
                | chat_events.RefusalDelta(index=part, text=text)
            ):
                return self._delta(part, {"type": "text_delta", "text": text})
            case chat_events.ReasoningStarted(index=part) if self.thinking:
                return [self._start(part, {"type": "thinking", "thinking": "", "signature": ""})]
            case chat_events.ReasoningDelta(index=part, text=text):
                return self._delta(part, {"type": "thinking_delta", "thinking": text})
            case chat_events.ToolCallStarted(index=part, call_id=call_id, name=name):
                block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
                return [self._start(part, block)]
            case chat_events.ToolArgumentsDelta(index=part, fragment=fragment):
                return self._delta(part, {"type": "input_json_delta", "partial_json": fragment})
            case (
                chat_events.TextDone(index=part)
                | chat_events.ReasoningDone(index=part)
                | chat_events.RefusalDone(index=part)
                | chat_events.ToolCallDone(index=part)
            ) if part in self.blocks:
                return [{"type": "content_block_stop", "index": self.blocks[part]}]
            case chat_events.Finished(finish_reason=finish, usage=usage, tool_calls=calls):
                reason, sequence = stop_reason(
                    finish,
                    matched=self.matched,
                    stop_sequences=self.stop_sequences,
                    tool_calls=calls,
                )
                return [
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": reason, "stop_sequence": sequence},
                        "usage": usage_object(usage),
                    },
                    {"type": "message_stop"},
                ]
        return []


def message_object(
    result: ChatResult, *, model: str, stop_sequences: list[str], thinking: bool
) -> dict[str, Any]:
    """A whole chat answer as a Messages `message`: the same blocks as its stream would have."""
    raw = result.raw or {}
    translator = MessageEvents(stop_sequences=stop_sequences, thinking=thinking)
    translator.matched = _matched_stop(raw)
    content: list[dict[str, Any]] = []
    ending: dict[str, Any] = {}
    arguments: dict[int, str] = {}
    for event in chat_events.events_from_completion(raw):
        if isinstance(event, chat_events.ToolCallDone):
            arguments[event.index] = event.arguments
        for item in translator.translate(event):
            if item["type"] == "content_block_start":
                content.append(dict(item["content_block"]))
            elif item["type"] == "content_block_delta":
                block, delta = content[item["index"]], item["delta"]
                if delta["type"] == "text_delta":
                    block["text"] += delta["text"]
                elif delta["type"] == "thinking_delta":
                    block["thinking"] += delta["thinking"]
            elif item["type"] == "message_delta":
                ending = item
    for part, block_index in translator.blocks.items():
        if content[block_index]["type"] == "tool_use":
            content[block_index]["input"] = tool_input(arguments.get(part, ""))
    if result.response and content and content[-1]["type"] == "text":
        content[-1]["text"] = result.response  # a checked JSON answer's text, as the core has it
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": ending["delta"]["stop_reason"],
        "stop_sequence": ending["delta"]["stop_sequence"],
        "usage": ending["usage"],
    }


# --- Streams -----------------------------------------------------------------------------------


def sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def message_stream_frames(
    events: AsyncGenerator[StreamEvent, None],
    *,
    model: str,
    stop_sequences: list[str],
    thinking: bool,
) -> AsyncIterator[bytes]:
    """The SSE bytes of a Messages stream over a chat stream's events (see the module docstring)."""
    chat = chat_events.ChatEventTranslator()
    translator = MessageEvents(stop_sequences=stop_sequences, thinking=thinking)
    start = {
        "type": "message_start",
        "message": {
            "id": message_id(),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
    }
    interval = settings.ANTHROPIC_PING_INTERVAL if settings.ANTHROPIC_PING_INTERVAL > 0 else None
    pending: asyncio.Task | None = None
    try:
        yield sse(start)
        yield sse({"type": "ping"})
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield sse({"type": "ping"})  # the server is slow; the client must not give up
                continue
            task, pending = pending, None
            try:
                event = task.result()
            except StopAsyncIteration:
                break
            if isinstance(event, RawChunk):
                translator.matched = _matched_stop(event.chunk) or translator.matched
                for item in chat.feed(event.chunk):
                    for frame in translator.translate(item):
                        yield sse(frame)
        for item in chat.finish():
            for frame in translator.translate(item):
                yield sse(frame)
    except (Exception, asyncio.CancelledError) as exc:
        failure = stream_failure(exc)
        if failure is None:
            raise
        # A chunk this stream cannot translate: the ledger row says so, not "client went away"
        # (the accounted events' `fail`, where the accounted path offers it).
        fail = getattr(events, "fail", None)
        if fail is not None and isinstance(exc, Exception):
            await fail(exc)
        detail, status = failure
        yield sse(error_body(status, detail))
    finally:
        if pending is not None:
            pending.cancel()
            try:
                await pending
            except (asyncio.CancelledError, StopAsyncIteration, Exception):  # noqa: S110
                pass
        await events.aclose()
