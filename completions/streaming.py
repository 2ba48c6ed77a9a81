"""
Stream framing: turn a service's stream events into bytes for the client.

* Plain text (the default): the answer's text as it is written, so `curl -N` prints it live.
  If the model server fails mid-stream, the transfer is aborted (the chunked body never gets
  its terminating chunk), so no client mistakes a cut answer for a whole one.
* Server-Sent Events (`Accept: text/event-stream`): `data: {"delta": ...}` events, one last
  event with `finish_reason`, `usage` and `model` (and, for JSON response formats, `valid` and
  `errors`), then `data: [DONE]`. A failure mid-stream
  becomes an `event: error` with a `detail`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator

import orjson
from django.http import StreamingHttpResponse

from completions.exceptions import LlmApiError
from completions.services import StreamEnd, StreamEvent, TextDelta

logger = logging.getLogger(__name__)

SSE_MEDIA_TYPE = "text/event-stream"
PLAIN_MEDIA_TYPE = "text/plain; charset=utf-8"


class StreamAborted(Exception):
    """Raised to make the ASGI server cut a plain-text stream that failed mid-way."""


class StreamAbortLogFilter(logging.Filter):
    """Keep the ASGI server from printing a traceback for a stream cut on purpose (logged once already)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamAborted))


def wants_event_stream(accept_header: str) -> bool:
    return SSE_MEDIA_TYPE in accept_header.lower()


def streaming_response(
    events: AsyncGenerator[StreamEvent, None], *, sse: bool
) -> StreamingHttpResponse:
    """Wrap stream events in a response that nothing between here and the client buffers."""
    if sse:
        return unbuffered_response(sse_frames(events), content_type=SSE_MEDIA_TYPE)
    return unbuffered_response(plain_text_frames(events), content_type=PLAIN_MEDIA_TYPE)


def unbuffered_response(
    frames: AsyncIterator[bytes], *, content_type: str
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(frames, content_type=content_type)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def plain_text_frames(events: AsyncGenerator[StreamEvent, None]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            if isinstance(event, TextDelta) and event.text:
                yield event.text.encode()
    except LlmApiError as exc:
        logger.warning("Stream aborted: %s", exc.detail)
        raise StreamAborted(str(exc.detail)) from None
    finally:
        await events.aclose()


async def sse_frames(events: AsyncGenerator[StreamEvent, None]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                if event.text:
                    yield _sse({"delta": event.text})
            elif isinstance(event, StreamEnd):
                final = {
                    "finish_reason": event.finish_reason,
                    "usage": event.usage,
                    "model": event.model,
                }
                if event.validation is not None:
                    final.update(event.validation)  # "valid" and "errors" for JSON formats
                yield _sse(final)
        yield b"data: [DONE]\n\n"
    except LlmApiError as exc:
        logger.warning("Stream failed: %s", exc.detail)
        yield _sse({"detail": str(exc.detail), "status": exc.status_code}, event="error")
    finally:
        await events.aclose()


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
        yield _sse(chunk(model, {"role": "assistant", "content": ""}))
        async for event in events:
            if isinstance(event, TextDelta):
                if event.text:
                    yield _sse(chunk(model, {"content": event.text}))
            elif isinstance(event, StreamEnd):
                yield _sse(chunk(event.model, {}, event.finish_reason or "stop"))
                if include_usage:
                    usage_chunk = chunk(event.model, {})
                    usage_chunk["choices"] = []
                    usage_chunk["usage"] = event.usage
                    yield _sse(usage_chunk)
        yield b"data: [DONE]\n\n"
    except LlmApiError as exc:
        logger.warning("Stream failed: %s", exc.detail)
        error = {"message": str(exc.detail), "type": "api_error", "code": exc.status_code}
        yield _sse({"error": error})
    finally:
        await events.aclose()


def _sse(data: dict, *, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n".encode() if event else b""
    return prefix + b"data: " + orjson.dumps(data) + b"\n\n"
