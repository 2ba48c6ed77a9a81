"""
The use cases: chat with a model, whole or streamed.

Services build the upstream request from validated input and the model's configured defaults,
hold a concurrency slot for the duration of the upstream call, and shape the answer. They do
not care whether the model is the embedded one or a remote server: both sit behind the
`ChatBackend` interface of `completions.upstream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from completions.exceptions import ModelBusy, ModelNotConfigured, UpstreamProtocolError
from completions.images import prepare_image
from completions.registry import ModelSpec
from completions.upstream import ChatBackend, OpenAICompatibleBackend

SAMPLING_PARAMS = (
    "temperature",
    "max_tokens",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
)


@dataclass(frozen=True)
class ChatResult:
    response: str
    model: str
    finish_reason: str | None
    usage: dict[str, int] | None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class StreamEnd:
    model: str
    finish_reason: str | None
    usage: dict[str, int] | None = field(default=None)


StreamEvent = TextDelta | StreamEnd


# --- Backends and concurrency ----------------------------------------------------------------


def get_backend(spec: ModelSpec) -> ChatBackend:
    """Pick the backend that serves `spec`: its server, or the embedded model."""
    if spec.base_url:
        return OpenAICompatibleBackend(spec)
    if spec.is_local:
        from completions import local_model

        return local_model.get_backend(spec)
    if spec.kind == "image":
        raise ModelNotConfigured(
            "No vision model is configured. Set IMAGE_MODEL__BASE_URL to an OpenAI-compatible "
            "server that serves a VLM (for example vLLM with Qwen2-VL, or llama.cpp's server "
            "with an mmproj file) and IMAGE_MODEL__MODEL_NAME to its model name."
        )
    raise ModelNotConfigured(
        f"No {spec.label} is configured. Set {spec.env_prefix}__BASE_URL to an "
        "OpenAI-compatible server."
    )


_semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def _semaphore(spec: ModelSpec) -> asyncio.Semaphore:
    per_loop = _semaphores.setdefault(asyncio.get_running_loop(), {})
    semaphore = per_loop.get(spec.kind)
    if semaphore is None:
        semaphore = per_loop[spec.kind] = asyncio.Semaphore(spec.max_concurrency)
    return semaphore


def slots_in_use(spec: ModelSpec) -> int:
    """How many requests to `spec` are in flight in this process right now."""
    semaphore = _semaphore(spec)
    return spec.max_concurrency - semaphore._value  # noqa: SLF001 (no public accessor)


@contextlib.asynccontextmanager
async def concurrency_slot(spec: ModelSpec) -> AsyncIterator[None]:
    """Hold one of the model's `MAX_CONCURRENCY` slots, waiting at most `QUEUE_TIMEOUT`."""
    semaphore = _semaphore(spec)
    try:
        if semaphore.locked() and spec.queue_timeout <= 0:
            raise TimeoutError
        async with asyncio.timeout(spec.queue_timeout or None):
            await semaphore.acquire()
    except TimeoutError:
        raise ModelBusy(
            f"The {spec.label} is busy: all {spec.max_concurrency} slots stayed in use for "
            f"{spec.queue_timeout:g} s. Retry after a moment.",
            retry_after=max(1, math.ceil(spec.queue_timeout)),
        ) from None
    try:
        yield
    finally:
        semaphore.release()


# --- Requests --------------------------------------------------------------------------------


def build_payload(
    *, spec: ModelSpec, messages: list[dict[str, Any]], params: dict[str, Any], stream: bool
) -> dict[str, Any]:
    """The OpenAI request body: the caller's parameters, the model's defaults for the rest."""
    payload: dict[str, Any] = {"model": spec.name, "messages": messages}
    for name in SAMPLING_PARAMS:
        value = params.get(name)
        payload[name] = spec.defaults[name] if value is None else value
    if params.get("response_format") is not None:
        payload["response_format"] = params["response_format"]
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return payload


async def chat_completion(
    *, spec: ModelSpec, messages: list[dict[str, Any]], params: dict[str, Any]
) -> ChatResult:
    """Ask the model for a whole answer."""
    backend = get_backend(spec)
    payload = build_payload(spec=spec, messages=messages, params=params, stream=False)
    async with concurrency_slot(spec):
        data = await backend.create(payload)
    choice = data["choices"][0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise UpstreamProtocolError(f"The {spec.label} server's answer has no message.")
    return ChatResult(
        response=message.get("content") or "",
        model=data.get("model") or spec.name,
        finish_reason=choice.get("finish_reason"),
        usage=_usage(data.get("usage")),
    )


async def open_chat_stream(
    *, spec: ModelSpec, messages: list[dict[str, Any]], params: dict[str, Any]
) -> AsyncIterator[StreamEvent]:
    """
    Start a streamed answer and return its events.

    The upstream request is open and its status checked when this returns, so a failure
    becomes an HTTP error before any byte reaches the client. The returned generator owns the
    upstream request and the concurrency slot: closing it, finishing it or cancelling it
    (a client disconnect) releases both.
    """
    backend = get_backend(spec)
    payload = build_payload(spec=spec, messages=messages, params=params, stream=True)
    events = _stream_events(spec=spec, backend=backend, payload=payload)
    await anext(events)  # runs up to the first yield: slot taken, upstream answered 2xx
    return events


async def _stream_events(
    *, spec: ModelSpec, backend: ChatBackend, payload: dict[str, Any]
) -> AsyncIterator[StreamEvent]:
    async with concurrency_slot(spec), backend.stream(payload) as chunks:
        yield TextDelta("")  # marks "opened"; consumed by open_chat_stream
        model, finish_reason, usage = spec.name, None, None
        async for chunk in chunks:
            if not isinstance(chunk, dict):
                raise UpstreamProtocolError(f"The {spec.label} server sent a malformed chunk.")
            model = chunk.get("model") or model
            usage = _usage(chunk.get("usage")) or usage
            for choice in chunk.get("choices") or ():
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    yield TextDelta(delta)
                finish_reason = choice.get("finish_reason") or finish_reason
        yield StreamEnd(model=model, finish_reason=finish_reason, usage=usage)


async def image_chat_messages(
    *, spec: ModelSpec, prompt: str, system: str | None, images: list[Any]
) -> list[dict[str, Any]]:
    """The OpenAI vision message for a prompt and uploaded images (checked, upright, downscaled)."""
    prepared = await asyncio.to_thread(
        lambda: [
            prepare_image(upload, max_bytes=spec.max_image_bytes, max_side=spec.max_image_side)
            for upload in images
        ]
    )
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    content += [{"type": "image_url", "image_url": {"url": image.data_url}} for image in prepared]
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    return messages


def _usage(raw: Any) -> dict[str, int] | None:
    if not isinstance(raw, dict):
        return None
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {key: raw[key] for key in keys if isinstance(raw.get(key), int)} or None
