"""The OpenAI shapes of an answer: `chat.completion` objects and `chat.completion.chunk` events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from api.streaming import sse_event, stream_failure
from gateway.calls import ChatResult, RawChunk, StreamEvent


async def openai_passthrough_frames(
    events: AsyncGenerator[StreamEvent, None],
    *,
    model: str,
    completion_id: str,
    created: int,
    include_usage: bool,
    object_name: str = "chat.completion.chunk",
) -> AsyncIterator[bytes]:
    """
    The server's chunks as it sent them (tool_calls deltas, logprobs, reasoning_content,
    system_fingerprint included), ending with `data: [DONE]`. The gateway only fills in an
    id, object, created or model a server left out, and drops the usage chunk it asked for
    itself when the client did not.
    """
    try:
        async for event in events:
            if not isinstance(event, RawChunk):
                continue
            chunk = event.chunk
            if not include_usage and "usage" in chunk:
                if not chunk.get("choices"):
                    continue  # the usage-only chunk the gateway asked for
                chunk = {key: value for key, value in chunk.items() if key != "usage"}
            chunk = {
                "id": completion_id,
                "object": object_name,
                "created": created,
                "model": model,
                **{key: value for key, value in chunk.items() if value is not None},
            }
            yield sse_event(chunk)
        yield b"data: [DONE]\n\n"
    except (Exception, asyncio.CancelledError) as exc:
        failure = stream_failure(exc)
        if failure is None:
            raise
        detail, status = failure
        yield sse_event({"error": {"message": detail, "type": "api_error", "code": status}})
    finally:
        await events.aclose()


def openai_completion(result: ChatResult, *, completion_id: str, created: int) -> dict:
    """
    The server's `chat.completion` as it sent it (system_fingerprint, logprobs, tool_calls,
    reasoning_content, usage details), with a checked JSON answer's text and the gateway's
    flag for a JSON answer cut by max_tokens.
    """
    raw = dict(result.raw or {})
    answer = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": result.model,
        **{key: value for key, value in raw.items() if value is not None},
    }
    choices = [dict(choice) for choice in answer.get("choices") or ()]
    if choices and isinstance(choices[0].get("message"), dict):
        message = dict(choices[0]["message"])
        if isinstance(message.get("content"), str):
            message["content"] = result.response
        choices[0]["message"] = message
        choices[0].setdefault("finish_reason", result.finish_reason or "stop")
        choices[0].setdefault("logprobs", None)
    answer["choices"] = choices
    if result.validation is not None:
        answer["validation"] = result.validation
    return answer
