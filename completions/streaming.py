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
from collections.abc import AsyncIterator

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


def streaming_response(events: AsyncIterator[StreamEvent], *, sse: bool) -> StreamingHttpResponse:
    """Wrap stream events in a response that nothing between here and the client buffers."""
    if sse:
        response = StreamingHttpResponse(sse_frames(events), content_type=SSE_MEDIA_TYPE)
    else:
        response = StreamingHttpResponse(plain_text_frames(events), content_type=PLAIN_MEDIA_TYPE)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def plain_text_frames(events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            if isinstance(event, TextDelta) and event.text:
                yield event.text.encode()
    except LlmApiError as exc:
        logger.warning("Stream aborted: %s", exc.detail)
        raise StreamAborted(str(exc.detail)) from None
    finally:
        await events.aclose()


async def sse_frames(events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
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


def _sse(data: dict, *, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n".encode() if event else b""
    return prefix + b"data: " + orjson.dumps(data) + b"\n\n"
