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
from inference.exceptions import UpstreamProtocolError
from inference.services import ChatResult, RawChunk, StreamEnd, StreamEvent

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
    finish_reason: str | None, *, matched: Any, stop_sequences: list[str], tool_calls: bool
) -> tuple[str, str | None]:
    """Anthropic's stop_reason and stop_sequence for a chat finish_reason."""
    if tool_calls:
        return "tool_use", None
    # vLLM names the stop string that ended the answer in the choice's `stop_reason`.
    if finish_reason == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return STOP_REASONS.get(finish_reason or "stop", "end_turn"), None


def usage_object(raw: Any) -> dict[str, int]:
    """Anthropic's usage from a chat usage: cached prompt tokens apart, where the server says."""
    raw = raw if isinstance(raw, dict) else {}
    prompt = raw.get("prompt_tokens") if isinstance(raw.get("prompt_tokens"), int) else 0
    output = raw.get("completion_tokens") if isinstance(raw.get("completion_tokens"), int) else 0
    usage = {"input_tokens": prompt, "output_tokens": output}
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if isinstance(cached, int) and 0 <= cached <= prompt:
        # Anthropic counts cache reads apart from input_tokens.
        usage["input_tokens"] = prompt - cached
        usage["cache_read_input_tokens"] = cached
    return usage


def _reasoning(message: dict[str, Any]) -> str:
    # vLLM's reasoning parsers and llama.cpp's server say `reasoning_content`; newer vLLM and
    # OpenRouter-style servers say `reasoning`.
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def message_object(
    result: ChatResult, *, model: str, stop_sequences: list[str], thinking: bool
) -> dict[str, Any]:
    """A whole chat answer as a Messages `message`."""
    raw = result.raw or {}
    choice = (raw.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = _reasoning(message)
    if thinking and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if result.response:
        content.append({"type": "text", "text": result.response})
    calls = message.get("tool_calls") or []
    for call in calls:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": function.get("name") or "",
                "input": tool_input(function.get("arguments")),
            }
        )
    reason, sequence = stop_reason(
        result.finish_reason,
        matched=choice.get("stop_reason"),
        stop_sequences=stop_sequences,
        tool_calls=bool(calls),
    )
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_object(raw.get("usage")),
    }


def tool_input(arguments: Any) -> dict[str, Any]:
    """A call's arguments as the object Anthropic's `input` is; anything else is the server's fault."""
    if arguments in (None, ""):
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise UpstreamProtocolError(
            "The model server's tool call arguments are not a JSON object: "
            f"{str(arguments)[:200]!r}"
        )
    return value


# --- Streams -----------------------------------------------------------------------------------


def sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class _Blocks:
    """The content blocks of a stream being relayed: one open at a time, numbered in order."""

    def __init__(self) -> None:
        self.count = 0
        self.open: tuple[str, Any] | None = None  # ("text" | "thinking" | "tool", tool index)
        self.closed_tools: set[Any] = set()

    def start(self, kind: str, key: Any, block: dict[str, Any]) -> list[dict[str, Any]]:
        events = self.stop()
        self.open = (kind, key)
        events.append({"type": "content_block_start", "index": self.count, "content_block": block})
        return events

    def stop(self) -> list[dict[str, Any]]:
        if self.open is None:
            return []
        if self.open[0] == "tool":
            self.closed_tools.add(self.open[1])
        self.open = None
        self.count += 1
        return [{"type": "content_block_stop", "index": self.count - 1}]

    def delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self.count, "delta": delta}


class MessageStreamTranslator:
    """Chat completion chunks in, Messages events out; `finish` gives the closing events."""

    def __init__(self, *, stop_sequences: list[str], thinking: bool) -> None:
        self.stop_sequences = stop_sequences
        self.thinking = thinking
        self.blocks = _Blocks()
        self.tools: dict[Any, dict[str, Any]] = {}  # index -> {"id", "name", "pending": [...]}
        self.finish_reason: str | None = None
        self.matched: Any = None
        self.usage: Any = None

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = _reasoning(delta)
            if reasoning and self.thinking:
                if self.blocks.open != ("thinking", None):
                    block = {"type": "thinking", "thinking": "", "signature": ""}
                    events += self.blocks.start("thinking", None, block)
                events.append(self.blocks.delta({"type": "thinking_delta", "thinking": reasoning}))
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.blocks.open != ("text", None):
                    events += self.blocks.start("text", None, {"type": "text", "text": ""})
                events.append(self.blocks.delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                events += self._tool_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.matched = choice.get("stop_reason")
        return events

    def _tool_delta(self, call: Any) -> list[dict[str, Any]]:
        if not isinstance(call, dict):
            raise UpstreamProtocolError("The model server sent a malformed tool call.")
        key = call.get("index", 0)
        function = call.get("function") or {}
        state = self.tools.setdefault(key, {"id": None, "name": None, "pending": []})
        state["id"] = state["id"] or call.get("id")
        state["name"] = state["name"] or function.get("name")
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            state["pending"].append(fragment)
        if key in self.blocks.closed_tools:
            if fragment:
                # Blocks cannot be reopened: never drop a byte of a call silently.
                raise UpstreamProtocolError(
                    "The model server interleaved the arguments of several tool calls."
                )
            return []
        events: list[dict[str, Any]] = []
        if self.blocks.open != ("tool", key):
            if not state["name"]:
                return []  # its name is still to come; the fragments wait
            block = {
                "type": "tool_use",
                "id": state["id"] or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": state["name"],
                "input": {},
            }
            events += self.blocks.start("tool", key, block)
        for piece in state["pending"]:
            events.append(self.blocks.delta({"type": "input_json_delta", "partial_json": piece}))
        state["pending"] = []
        return events

    def finish(self) -> list[dict[str, Any]]:
        events = self.blocks.stop()
        reason, sequence = stop_reason(
            self.finish_reason,
            matched=self.matched,
            stop_sequences=self.stop_sequences,
            tool_calls=bool(self.tools),
        )
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": usage_object(self.usage),
            }
        )
        events.append({"type": "message_stop"})
        return events


async def message_stream_frames(
    events: AsyncGenerator[StreamEvent, None],
    *,
    model: str,
    stop_sequences: list[str],
    thinking: bool,
) -> AsyncIterator[bytes]:
    """The SSE bytes of a Messages stream over a chat stream's events (see the module docstring)."""
    translator = MessageStreamTranslator(stop_sequences=stop_sequences, thinking=thinking)
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
    interval = settings.ANTHROPIC_PING_INTERVAL
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
                for item in translator.chunk(event.chunk):
                    yield sse(item)
            elif isinstance(event, StreamEnd) and translator.usage is None:
                translator.usage = event.usage
        for item in translator.finish():
            yield sse(item)
    except (Exception, asyncio.CancelledError) as exc:
        failure = stream_failure(exc)
        if failure is None:
            raise
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
