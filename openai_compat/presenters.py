"""The OpenAI shapes of an answer: `chat.completion.chunk` events for streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from api.streaming import sse_event, stream_failure
from inference.services import StreamEnd, StreamEvent, TextDelta


async def openai_chunk_frames(
    events: AsyncGenerator[StreamEvent, None],
    *,
    model: str,
    completion_id: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """OpenAI's `chat.completion.chunk` events, ending with `data: [DONE]`."""

    def chunk(model: str, delta: dict, finish_reason: str | None = None) -> dict:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    try:
        yield sse_event(chunk(model, {"role": "assistant", "content": ""}))
        async for event in events:
            if isinstance(event, TextDelta):
                if event.text:
                    yield sse_event(chunk(model, {"content": event.text}))
            elif isinstance(event, StreamEnd):
                yield sse_event(chunk(event.model, {}, event.finish_reason or "stop"))
                if include_usage:
                    usage_chunk = chunk(event.model, {})
                    usage_chunk["choices"] = []
                    usage_chunk["usage"] = event.usage
                    yield sse_event(usage_chunk)
        yield b"data: [DONE]\n\n"
    except (Exception, asyncio.CancelledError) as exc:
        failure = stream_failure(exc)
        if failure is None:
            raise
        detail, status = failure
        yield sse_event({"error": {"message": detail, "type": "api_error", "code": status}})
    finally:
        await events.aclose()
