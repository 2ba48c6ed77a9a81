"""Stream framing: every stream that ends early ends in-band."""

from __future__ import annotations

import asyncio
import json

import pytest

from api.streaming import (
    SHUTDOWN_CANCEL_MESSAGE,
    StreamAborted,
    plain_text_frames,
    sse_frames,
)
from inference.exceptions import UpstreamUnavailable
from inference.services import StreamEnd, TextDelta
from openai_compat.presenters import openai_passthrough_frames


async def events_then(failure: BaseException | None):
    yield TextDelta("Hello ")
    if failure is not None:
        raise failure
    yield StreamEnd(model="m", finish_reason="stop")


async def collect(frames) -> list[bytes]:
    return [frame async for frame in frames]


def openai_frames(events):
    return openai_passthrough_frames(
        events, model="m", completion_id="chatcmpl-1", created=0, include_usage=False
    )


def last_event(frames: list[bytes]) -> tuple[str | None, dict]:
    text = frames[-1].decode().strip()
    event = None
    if text.startswith("event: "):
        first, _, text = text.partition("\n")
        event = first.removeprefix("event: ")
    return event, json.loads(text.removeprefix("data: "))


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (UpstreamUnavailable("The model server closed the stream."), 502),
        (RecursionError("maximum recursion depth exceeded"), 500),
        (KeyError("bug"), 500),
        (asyncio.CancelledError(SHUTDOWN_CANCEL_MESSAGE), 503),
    ],
)
async def test_sse_stream_that_ends_early_ends_with_an_error_event(failure, status):
    frames = await collect(sse_frames(events_then(failure)))
    event, data = last_event(frames)
    assert event == "error"
    assert data["status"] == status
    assert "recursion" not in data["detail"] and "bug" not in data["detail"]  # no internals


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (UpstreamUnavailable("cut"), 502),
        (ValueError("bug"), 500),
        (asyncio.CancelledError(SHUTDOWN_CANCEL_MESSAGE), 503),
    ],
)
async def test_openai_stream_that_ends_early_ends_with_an_error_chunk(failure, code):
    frames = await collect(openai_frames(events_then(failure)))
    event, data = last_event(frames)
    assert event is None
    assert data["error"]["code"] == code
    assert b"[DONE]" not in b"".join(frames)


@pytest.mark.parametrize(
    "failure",
    [UpstreamUnavailable("cut"), TypeError("bug"), asyncio.CancelledError(SHUTDOWN_CANCEL_MESSAGE)],
)
async def test_plain_text_stream_that_ends_early_is_aborted(failure):
    with pytest.raises(StreamAborted):
        await collect(plain_text_frames(events_then(failure)))


@pytest.mark.parametrize("frames", [sse_frames, openai_frames, plain_text_frames])
async def test_a_client_that_went_away_is_not_answered(frames):
    with pytest.raises(asyncio.CancelledError):
        await collect(frames(events_then(asyncio.CancelledError())))


async def test_whole_sse_stream_ends_with_done():
    frames = await collect(sse_frames(events_then(None)))
    assert frames[-1] == b"data: [DONE]\n\n"
