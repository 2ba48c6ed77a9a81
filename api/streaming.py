"""
Stream framing: turn a service's stream events into bytes for the client.

* Plain text (the default): the answer's text as it is written, so `curl -N` prints it live.
  If the model server fails mid-stream, the transfer is aborted (the chunked body never gets
  its terminating chunk), so no client mistakes a cut answer for a whole one.
* Server-Sent Events (`Accept: text/event-stream`): `data: {"delta": ...}` events, one last
  event with `finish_reason`, `usage` and `model` (and, for JSON response formats, `valid` and
  `errors`), then `data: [DONE]`.
* OpenAI chunks (/v1): `chat.completion.chunk` events, then `data: [DONE]`.

A stream that ends early for any reason ends in-band: `event: error` with a `detail` and a
`status` over SSE, a last `data: {"error": {...}}` on /v1 (no `[DONE]`), an aborted transfer
for plain text. The reasons are the model server failing, a bug in the gateway (a 500, logged
with its traceback), and the server's graceful-shutdown timeout cutting the stream (a 503).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator

import orjson
from django.http import StreamingHttpResponse

from api.exceptions import status_of
from gateway.calls import StreamEnd, StreamEvent, TextDelta
from inference.exceptions import InferenceError

logger = logging.getLogger(__name__)

SSE_MEDIA_TYPE = "text/event-stream"
PLAIN_MEDIA_TYPE = "text/plain; charset=utf-8"


# The message the ASGI handler cancels a response with when the server's graceful-shutdown
# timeout runs out (see server/handler.py); any other cancellation is a client that went away.
SHUTDOWN_CANCEL_MESSAGE = "llmapi: graceful shutdown timeout"
SHUTDOWN_DETAIL = "The server is shutting down and cut this stream. Retry the request."
INTERNAL_DETAIL = "Internal server error: the stream could not be completed."


class StreamAborted(Exception):
    """Raised to make the ASGI server cut a plain-text stream that failed mid-way."""


def is_shutdown_cut(exc: asyncio.CancelledError) -> bool:
    return SHUTDOWN_CANCEL_MESSAGE in exc.args


def stream_failure(exc: BaseException) -> tuple[str, int] | None:
    """
    `(detail, status)` for a stream that must end with an in-band error, or None when the
    exception must propagate (a client that went away: no one is left to tell).
    """
    if isinstance(exc, InferenceError):
        logger.warning("Stream failed: %s", exc.detail)
        return exc.detail, status_of(exc)
    if isinstance(exc, asyncio.CancelledError):
        if is_shutdown_cut(exc):
            logger.warning("Stream cut: the graceful-shutdown timeout ran out")
            return SHUTDOWN_DETAIL, 503
        return None
    if isinstance(exc, Exception):
        logger.error("Stream failed unexpectedly", exc_info=exc)
        return INTERNAL_DETAIL, 500
    return None


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
    except (Exception, asyncio.CancelledError) as exc:
        failure = stream_failure(exc)
        if failure is None:
            raise
        raise StreamAborted(failure[0]) from None
    finally:
        await events.aclose()


async def sse_frames(events: AsyncGenerator[StreamEvent, None]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                if event.text:
                    yield sse_event({"delta": event.text})
            elif isinstance(event, StreamEnd):
                final = {
                    "finish_reason": event.finish_reason,
                    "usage": event.usage,
                    "model": event.model,
                }
                if event.validation is not None:
                    final.update(event.validation)  # "valid" and "errors" for JSON formats
                yield sse_event(final)
        yield b"data: [DONE]\n\n"
    except (Exception, asyncio.CancelledError) as exc:
        failure = stream_failure(exc)
        if failure is None:
            raise
        detail, status = failure
        yield sse_event({"detail": detail, "status": status}, event="error")
    finally:
        await events.aclose()


def sse_event(data: dict, *, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n".encode() if event else b""
    return prefix + b"data: " + orjson.dumps(data) + b"\n\n"
