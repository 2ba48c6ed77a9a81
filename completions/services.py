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
import functools
import logging
import math
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from completions import structured
from completions.exceptions import (
    DETAIL_LIMIT,
    InvalidModelOutput,
    ModelBusy,
    ModelNotConfigured,
    OutputCheckTooCostly,
    UpstreamProtocolError,
    UpstreamStatusError,
    quote,
)
from completions.images import prepare_uploads
from completions.registry import ModelSpec, get_model_spec
from completions.upstream import ChatBackend, OpenAICompatibleBackend

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Sent only when the caller set them.
OPTIONAL_PARAMS = ("response_format", "stop")

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
    parsed: Any = None  # the decoded JSON, when a JSON response_format was asked for


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class StreamEnd:
    model: str
    finish_reason: str | None
    usage: dict[str, int] | None = field(default=None)
    # For JSON response formats: {"valid": bool, "errors": [...]}. Streams are not repaired.
    validation: dict[str, Any] | None = field(default=None)


StreamEvent = TextDelta | StreamEnd


# --- Backends and concurrency ----------------------------------------------------------------


def get_backend(spec: ModelSpec) -> ChatBackend:
    """Pick the backend that serves `spec`: its server, or the embedded model."""
    if spec.base_url:
        return _remote_backend(spec)
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


@functools.cache
def _remote_backend(spec: ModelSpec) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(spec)


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
        if not semaphore.locked():
            await semaphore.acquire()  # a free slot: no timer needed
        elif spec.queue_timeout <= 0:
            raise TimeoutError
        else:
            async with asyncio.timeout(spec.queue_timeout):
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
    for name in OPTIONAL_PARAMS:
        if params.get(name) is not None:
            payload[name] = params[name]
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return payload


async def chat_completion(
    *, spec: ModelSpec, messages: list[dict[str, Any]], params: dict[str, Any]
) -> ChatResult:
    """
    Ask the model for a whole answer.

    With a JSON `response_format`, the answer is validated; an invalid one is sent back to the
    model with the errors, up to `JSON_RETRIES` times, and a final failure is an honest 502.
    """
    backend = get_backend(spec)
    response_format = params.get("response_format")
    payload = build_payload(spec=spec, messages=messages, params=params, stream=False)
    async with concurrency_slot(spec):
        result = _chat_result(spec, await _create(spec, backend, payload))
        if not structured.wants_json(response_format):
            return result
        check = await structured.check_output_off_loop(result.response, response_format)
        for attempt in range(1, spec.json_retries + 1):
            if check.valid:
                break
            logger.info(
                "Invalid JSON from the %s (attempt %d of repair): %s",
                spec.label,
                attempt,
                quote(structured.describe_errors(check.errors), DETAIL_LIMIT),
            )
            repair = structured.repair_messages(
                messages, output=result.response, check=check, response_format=response_format
            )
            result = _chat_result(
                spec, await _create(spec, backend, {**payload, "messages": repair})
            )
            check = await structured.check_output_off_loop(result.response, response_format)
    if not check.valid:
        raise InvalidModelOutput(
            f"The model did not produce valid {response_format['type']} output "
            f"(after {spec.json_retries} repair attempt(s)): "
            f"{structured.describe_errors(check.errors)}",
            errors=check.errors,
            output=result.response,
        )
    return replace(result, response=check.text, parsed=check.parsed)


async def open_chat_stream(
    *, spec: ModelSpec, messages: list[dict[str, Any]], params: dict[str, Any]
) -> AsyncGenerator[StreamEvent, None]:
    """
    Start a streamed answer and return its events.

    The upstream request is open and its status checked when this returns, so a failure
    becomes an HTTP error before any byte reaches the client. The returned generator owns the
    upstream request and the concurrency slot: closing it, finishing it or cancelling it
    (a client disconnect) releases both. With a JSON `response_format`, the last event says
    whether the whole answer was valid; nothing is repaired mid-stream.
    """
    backend = get_backend(spec)
    payload = build_payload(spec=spec, messages=messages, params=params, stream=True)
    events = _stream_events(spec=spec, backend=backend, payload=payload)
    await anext(events)  # runs up to the first yield: slot taken, upstream answered 2xx
    return events


async def _stream_events(
    *, spec: ModelSpec, backend: ChatBackend, payload: dict[str, Any]
) -> AsyncGenerator[StreamEvent, None]:
    async with concurrency_slot(spec), contextlib.AsyncExitStack() as stack:
        chunks = await _open_stream(spec, backend, payload, stack)
        yield TextDelta("")  # marks "opened"; consumed by open_chat_stream
        model, finish_reason, usage = spec.name, None, None
        pieces: list[str] = []
        async for chunk in chunks:
            if not isinstance(chunk, dict):
                raise UpstreamProtocolError(f"The {spec.label} server sent a malformed chunk.")
            model = chunk.get("model") or model
            usage = _usage(chunk.get("usage")) or usage
            for choice in chunk.get("choices") or ():
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    pieces.append(delta)
                    yield TextDelta(delta)
                finish_reason = choice.get("finish_reason") or finish_reason
        validation = None
        response_format = payload.get("response_format")
        if structured.wants_json(response_format):
            try:
                check = await structured.check_output_off_loop("".join(pieces), response_format)
            except OutputCheckTooCostly as exc:
                # The answer is already sent; its verdict says why it was not checked.
                check = structured.OutputCheck(
                    False, "", errors=[{"path": "$", "message": str(exc.detail)}]
                )
            validation = {"valid": check.valid, "errors": check.errors}
        yield StreamEnd(
            model=model, finish_reason=finish_reason, usage=usage, validation=validation
        )


# --- json_schema on servers that refuse it ----------------------------------------------------

# Models whose server refused a native json_schema request (per process): skip the failed try.
_native_schema_refused: set[str] = set()


def _schema_payload(spec: ModelSpec, payload: dict[str, Any]) -> dict[str, Any]:
    response_format = payload.get("response_format") or {}
    if response_format.get("type") != "json_schema":
        return payload
    if spec.json_schema_mode == "prompt" or (
        spec.json_schema_mode == "auto" and spec.kind in _native_schema_refused
    ):
        return _prompted(payload)
    return payload


def _prompted(payload: dict[str, Any]) -> dict[str, Any]:
    response_format, messages = structured.schema_prompt_format(
        payload["response_format"], payload["messages"]
    )
    return {**payload, "response_format": response_format, "messages": messages}


def _schema_fallback(spec: ModelSpec, payload: dict[str, Any], exc: UpstreamStatusError):
    """The prompt-mode payload to retry with, when the server refused a native json_schema."""
    refused = exc.upstream_status in SCHEMA_REFUSAL_STATUSES
    native = (payload.get("response_format") or {}).get("type") == "json_schema"
    if not (refused and native and spec.json_schema_mode == "auto"):
        return None
    logger.warning(
        "The %s server refused response_format json_schema (%s); falling back to json_object "
        "with the schema in a system message (%s__JSON_SCHEMA_MODE=prompt makes this permanent).",
        spec.label,
        exc.upstream_status,
        spec.env_prefix,
    )
    _native_schema_refused.add(spec.kind)
    return _prompted(payload)


SCHEMA_REFUSAL_STATUSES = (400, 422, 501)


async def _with_schema_fallback(
    spec: ModelSpec, payload: dict[str, Any], send: Callable[[dict[str, Any]], Awaitable[T]]
) -> T:
    """`send(payload)`, retried once in prompt mode if the server refuses native json_schema."""
    payload = _schema_payload(spec, payload)
    try:
        return await send(payload)
    except UpstreamStatusError as exc:
        fallback = _schema_fallback(spec, payload, exc)
        if fallback is None:
            raise
        return await send(fallback)


async def _create(spec: ModelSpec, backend: ChatBackend, payload: dict[str, Any]) -> dict[str, Any]:
    return await _with_schema_fallback(spec, payload, backend.create)


async def _open_stream(
    spec: ModelSpec, backend: ChatBackend, payload: dict[str, Any], stack: contextlib.AsyncExitStack
) -> AsyncIterator[dict[str, Any]]:
    async def open_(body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return await stack.enter_async_context(backend.stream(body))

    return await _with_schema_fallback(spec, payload, open_)


def _chat_result(spec: ModelSpec, data: dict[str, Any]) -> ChatResult:
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


async def readiness() -> dict[str, Any]:
    """
    Whether every configured model can answer: its embedded model is loaded, or at least one
    of its servers answers HTTP and is not ejected. Shows no secret: servers appear as
    scheme://host:port only.
    """
    models: dict[str, Any] = {}
    for kind in ("text", "image"):
        spec = get_model_spec(kind)
        if spec.base_url:
            backend = _remote_backend(spec)
            replicas = backend.pool.replicas
            reachable = await asyncio.gather(*(backend.probe(r) for r in replicas))
            now = time.monotonic()
            models[kind] = {
                "name": spec.name,
                "backend": "server",
                "ready": any(
                    ok and not r.ejected(now) for r, ok in zip(replicas, reachable, strict=True)
                ),
                "in_flight": slots_in_use(spec),
                "servers": [
                    {
                        "server": r.location,
                        "reachable": ok,
                        "ejected": r.ejected(now),
                        "in_flight": r.in_flight,
                    }
                    for r, ok in zip(replicas, reachable, strict=True)
                ],
            }
        elif spec.is_local:
            from completions import local_model

            models[kind] = {
                "name": spec.name,
                "backend": "embedded",
                "ready": local_model.is_loaded(),
                "in_flight": slots_in_use(spec),
            }
        else:
            models[kind] = {"configured": False}
    ready = all(model.get("ready", True) for model in models.values())
    return {"ready": ready, "models": models}


async def image_chat_messages(
    *, spec: ModelSpec, prompt: str, system: str | None, images: list[Any]
) -> list[dict[str, Any]]:
    """The OpenAI vision message for a prompt and uploaded images (checked, upright, downscaled)."""
    prepared = await prepare_uploads(
        images, max_bytes=spec.max_image_bytes, max_side=spec.max_image_side
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
