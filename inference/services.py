"""
The use cases: chat with a model, whole or streamed.

Services build the upstream request from validated input and the model's configured defaults,
hold a concurrency slot for the duration of the upstream call, and shape the answer. They do
not care whether the model is the embedded one or a remote server: both sit behind the
`ChatBackend` interface of `inference.backends.openai_http`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from django.conf import settings

from inference import replica_load, structured
from inference.backends.openai_http import ChatBackend, OpenAICompatibleBackend, answered_replica
from inference.catalog import ModelSpec
from inference.exceptions import (
    DETAIL_LIMIT,
    CapabilityMissing,
    InferenceError,
    InvalidModelOutput,
    ModelBusy,
    ModelNotConfigured,
    ModelNotFound,
    OutputCheckTooCostly,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    quote,
)
from inference.images import prepare_uploads
from inference.registry import get_registry
from limits.flows import Flow
from limits.slots import SlotTimeout
from observability import metrics, timing

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
    # The catalog model that answered, and the one asked for when a fallback answered instead.
    answered_by: str = ""
    fallback_from: str | None = None
    replica: str = ""  # the server that answered ("embedded" for the embedded model)
    # The server's whole answer as it sent it (for /v1, which passes it through).
    raw: dict[str, Any] | None = None
    # For a JSON format whose answer was cut by max_tokens: {"valid": False, "truncated": True,
    # "errors": [...]}; the truncated text is returned, not repaired.
    validation: dict[str, Any] | None = None


@dataclass(frozen=True)
class PassthroughResult:
    """Another OpenAI endpoint's answer (`/embeddings`, `/completions`), as the server sent it."""

    body: dict[str, Any]
    answered_by: str
    replica: str = ""
    fallback_from: str | None = None

    @property
    def usage(self) -> dict[str, int] | None:
        return usage_of(self.body.get("usage"))


@dataclass(frozen=True)
class CallContext:
    """
    What the accounted path (`gateway.calls`) hands every model call, so that the core applies
    the caller's limits without knowing who the caller is:

    - `may_use`: the key's model scope, checked for every fallback before it is tried;
    - `admitted`: awaited once a model slot is held, before the model server is called: the
      quota's verdict when its reservation travels with the slot's acquisition (a refusal
      raises, and the slot goes back);
    - `requires`: the capabilities a fallback must have to take the request;
    - `priority`: the caller's class for the model's slots ("interactive" or "batch");
    - `flow`: the caller's place in a busy model's line (team, key, the team's weight, and the
      priority again); None: an anonymous flow of `priority`.
    """

    may_use: Callable[[ModelSpec], bool]
    admitted: Callable[[], Awaitable[None]] | None = None
    requires: tuple[str, ...] = ()
    priority: str = "interactive"
    flow: Flow | None = None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class RawChunk:
    """A `chat.completion.chunk` as the server sent it (pass-through streams)."""

    chunk: dict[str, Any]


@dataclass(frozen=True)
class StreamEnd:
    model: str
    finish_reason: str | None
    usage: dict[str, int] | None = field(default=None)
    # For JSON response formats: {"valid": bool, "errors": [...]}. Streams are not repaired.
    validation: dict[str, Any] | None = field(default=None)


StreamEvent = TextDelta | RawChunk | StreamEnd


@dataclass(frozen=True)
class ChatStream:
    """An opened stream: its events, and which catalog model answered (a fallback, maybe)."""

    events: AsyncGenerator[StreamEvent, None]
    answered_by: str
    fallback_from: str | None = None
    replica: str = ""  # the server that answered ("embedded" for the embedded model)


def _replica(spec: ModelSpec) -> str:
    return "embedded" if spec.is_embedded else answered_replica.get()


# --- Models, backends and concurrency --------------------------------------------------------


def resolve_model(name: str | None, *, role: str = "text", capability: str = "chat") -> ModelSpec:
    """
    The model a request asks for: by name or alias, or the seed endpoints' default for `role`
    ("text" or "image") when it names none.
    """
    catalog = get_registry().catalog
    if name:
        spec = catalog.resolve(name, capability=capability)
        if spec is None:
            raise ModelNotFound(
                f"The model '{quote(name, 100)}' does not exist; GET /v1/models lists them."
            )
        return spec
    spec = catalog.text if role == "text" else catalog.image
    if spec is not None:
        return spec
    if role == "image":
        raise ModelNotConfigured(
            "No vision model is configured. Set IMAGE_MODEL__BASE_URL to an OpenAI-compatible "
            "server that serves a VLM (for example vLLM with Qwen2-VL, or llama.cpp's server "
            "with an mmproj file) and IMAGE_MODEL__MODEL_NAME to its model name."
        )
    raise ModelNotConfigured(
        "No text model is configured. Set TEXT_MODEL__BASE_URL to an OpenAI-compatible server."
    )


def get_backend(spec: ModelSpec) -> ChatBackend:
    """The backend that serves `spec`: its servers, or the embedded model."""
    return get_registry().backend(spec)


def slots_in_use(spec: ModelSpec) -> int:
    """How many requests to `spec` are in flight in this process right now."""
    return get_registry().slots(spec).in_use


@contextlib.asynccontextmanager
async def concurrency_slot(spec: ModelSpec, context: CallContext) -> AsyncIterator[None]:
    """
    Hold one of the model's `MAX_CONCURRENCY` slots, waiting at most `QUEUE_TIMEOUT` in the
    line of the caller's flow (`CallContext.flow`: team, key, weight, priority; the order of
    the line: `limits.flows`), then wait for the caller's admission (`CallContext.admitted`).
    """
    timing.annotate(model=spec.name)  # the model that answers (a fallback, maybe)
    flow = context.flow or Flow(priority=context.priority)
    team = flow.team or None
    slots = get_registry().slots(spec)
    async with contextlib.AsyncExitStack() as stack:
        started = time.perf_counter()
        try:
            with timing.span("queue"), metrics.queued(spec.name, team, flow.priority):
                await stack.enter_async_context(
                    slots.hold(queue_timeout=spec.queue_timeout, flow=flow)
                )
        except SlotTimeout as exc:
            caller = timing.current()
            fields = caller.fields if caller is not None else {}
            metrics.record_rate_limited(
                "model_slots", spec.name, fields.get("team"), fields.get("key_id")
            )
            raise ModelBusy(
                f"The {spec.label} is busy: all {spec.max_concurrency} slots stayed in use for "
                f"{spec.queue_timeout:g} s. Retry after a moment.",
                # From the line seen when giving up, else the queue timeout.
                retry_after=exc.retry_after or max(1, math.ceil(spec.queue_timeout)),
            ) from None
        metrics.record_queue_wait(spec.name, time.perf_counter() - started, team, flow.priority)
        # The caller's quota, sent with the slot's acquisition: refused, the slot goes back.
        if context.admitted is not None:
            await context.admitted()
        with metrics.in_flight(spec.name):
            yield


def falls_back(exc: InferenceError) -> bool:
    """
    Whether a failure of one model sends the request to its fallback: its servers are down,
    too slow, overloaded or failing (after the replica retries), or its slots are all taken.
    A request the model refused (4xx) or an answer that broke its format does not.
    """
    if isinstance(exc, UpstreamStatusError):
        return exc.upstream_status == 429 or exc.upstream_status >= 500
    if isinstance(exc, InvalidModelOutput | OutputCheckTooCostly):
        return False
    return isinstance(exc, UpstreamError | ModelBusy | ModelNotConfigured)


async def _with_fallbacks(
    spec: ModelSpec,
    attempt: Callable[[ModelSpec], Awaitable[T]],
    *,
    context: CallContext,
    requires: tuple[str, ...] = (),
) -> T:
    """
    `attempt(spec)`, then each of its fallback models in order while the failure allows.
    Fallbacks outside the caller's scope, or without a capability the request requires
    (tools, images), are skipped.
    """
    fallbacks = get_registry().catalog.fallbacks_of(spec)
    needs = (*context.requires, *requires)
    chain = [
        spec,
        *(f for f in fallbacks if all(f.has(need) for need in needs) and context.may_use(f)),
    ]
    for index, candidate in enumerate(chain):
        try:
            return await attempt(candidate)
        except InferenceError as exc:
            if index == len(chain) - 1 or not falls_back(exc):
                raise
            logger.warning(
                "The %s failed before answering (%s); falling back to model '%s'",
                candidate.label,
                type(exc).__name__,
                chain[index + 1].name,
            )
    raise AssertionError("unreachable")  # pragma: no cover


# --- Requests --------------------------------------------------------------------------------


def build_payload(
    *, spec: ModelSpec, messages: list[dict[str, Any]], params: dict[str, Any], stream: bool
) -> dict[str, Any]:
    """The OpenAI request body: the caller's parameters, the model's defaults for the rest."""
    payload: dict[str, Any] = {"model": spec.served_name, "messages": messages}
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


def passthrough_payload(*, spec: ModelSpec, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """
    The OpenAI request body for /v1: what the client sent, as it sent it, with the model's
    served name. No defaults are added: the model server's own apply. A stream also asks for
    the usage chunk, which the gateway needs to count tokens (it reaches the client only when
    the client asked for it).
    """
    payload = {**body, "model": spec.served_name}
    if spec.is_embedded:
        # The embedded model is its own server: its configured defaults are the server's.
        for name in SAMPLING_PARAMS:
            payload.setdefault(name, spec.defaults[name])
        # llama.cpp's chat templates know no "developer" role; it is OpenAI's new "system".
        payload["messages"] = [
            {**m, "role": "system"} if m.get("role") == "developer" else m
            for m in payload["messages"]
        ]
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return payload


def uses_tools(body: Mapping[str, Any]) -> bool:
    """Whether a chat body asks for tools (so only models with the `tools` capability may take it)."""
    return bool(body.get("tools") or body.get("tool_choice") or body.get("functions"))


def has_images(messages: list[dict[str, Any]]) -> bool:
    """Whether any message carries an image part."""
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    return True
    return False


def check_tool_support(spec: ModelSpec, body: dict[str, Any]) -> None:
    """Tools on a model without the `tools` capability are a clear 400, not a silent no-op."""
    if uses_tools(body) and not spec.has("tools"):
        raise CapabilityMissing(
            f"The model '{spec.name}' has no tool support (tools, tool_choice); use a model "
            "served by a model server (GET /v1/models lists each model's capabilities)."
        )


async def openai_chat_completion(
    *, spec: ModelSpec, body: dict[str, Any], context: CallContext
) -> ChatResult:
    """A /v1 chat completion, passed through; `raw` holds the server's whole answer."""
    check_tool_support(spec, body)

    async def attempt(candidate: ModelSpec) -> ChatResult:
        payload = passthrough_payload(spec=candidate, body=body, stream=False)
        result = await _chat_completion_on(candidate, payload, context)
        fallback_from = spec.name if candidate is not spec else None
        return replace(
            result,
            answered_by=candidate.name,
            fallback_from=fallback_from,
            replica=_replica(candidate),
        )

    return await _with_fallbacks(spec, attempt, context=context, requires=_tool_needs(body))


async def open_openai_chat_stream(
    *, spec: ModelSpec, body: dict[str, Any], context: CallContext
) -> ChatStream:
    """A /v1 streamed chat completion, passed through chunk by chunk (`RawChunk` events)."""
    check_tool_support(spec, body)

    async def attempt(candidate: ModelSpec) -> ChatStream:
        payload = passthrough_payload(spec=candidate, body=body, stream=True)
        return await _open_stream_on(spec, candidate, payload, raw=True, context=context)

    return await _with_fallbacks(spec, attempt, context=context, requires=_tool_needs(body))


def _tool_needs(body: Mapping[str, Any]) -> tuple[str, ...]:
    return ("tools",) if uses_tools(body) else ()


def _served_backend(spec: ModelSpec, what: str) -> OpenAICompatibleBackend:
    if spec.is_embedded:
        raise CapabilityMissing(
            f"The model '{spec.name}' runs inside the gateway and has no {what}; use a model "
            "served by a model server (GET /v1/models lists each model's capabilities)."
        )
    return get_backend(spec)  # type: ignore[return-value]


async def openai_passthrough(
    *, spec: ModelSpec, path: str, body: dict[str, Any], what: str, context: CallContext
) -> PassthroughResult:
    """
    Another OpenAI endpoint (`/embeddings`, `/completions`) of the model's servers, the body
    passed through with the model's served name, the answer returned as the server sent it.
    """

    async def attempt(candidate: ModelSpec) -> PassthroughResult:
        backend = _served_backend(candidate, what)
        async with concurrency_slot(candidate, context):
            answer = await backend.post(path, {**body, "model": candidate.served_name})
        if not isinstance(answer, dict):
            raise UpstreamProtocolError(f"The {candidate.label} server sent a malformed answer.")
        _annotate_usage(usage_of(answer.get("usage")))
        return PassthroughResult(
            answer,
            answered_by=candidate.name,
            replica=_replica(candidate),
            fallback_from=spec.name if candidate is not spec else None,
        )

    return await _with_fallbacks(spec, attempt, context=context)


# A rough characters-per-token ratio for counts without a tokenizer (English text and code).
CHARS_PER_TOKEN = 4


async def count_chat_tokens(
    *,
    spec: ModelSpec,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    context: CallContext,
) -> PassthroughResult:
    """
    A chat prompt's tokens by the model server's own tokenizer and chat template: vLLM's
    `/tokenize` (messages and tools), else llama.cpp's server (`/apply-template`, then
    `/tokenize`). The embedded model, or a server with neither, gets an estimate (characters
    / CHARS_PER_TOKEN). The answer's body is `{"input_tokens", "estimated", "usage"}`.
    """
    count: int | None = None
    async with concurrency_slot(spec, context):
        if not spec.is_embedded:
            try:
                count = await _server_token_count(spec, messages, tools)
            except InferenceError as exc:
                logger.info("No token count from the %s server (%s); estimating", spec.label, exc)
    estimated = count is None
    if count is None:
        chars = len(json.dumps([messages, tools or []], ensure_ascii=False))
        count = max(1, -(-chars // CHARS_PER_TOKEN))
    usage = {"prompt_tokens": count, "completion_tokens": 0, "total_tokens": count}
    return PassthroughResult(
        {"input_tokens": count, "estimated": estimated, "usage": usage},
        answered_by=spec.name,
        replica="" if estimated else _replica(spec),
    )


async def _server_token_count(
    spec: ModelSpec, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> int:
    backend = _served_backend(spec, "tokenizer")
    asked: dict[str, Any] = {"model": spec.served_name, "messages": messages}
    if tools:
        asked["tools"] = tools
    try:
        answer = await backend.post("/tokenize", asked, from_root=True)
        if isinstance(answer.get("count"), int):
            return answer["count"]  # vLLM
    except UpstreamStatusError:
        pass
    templated = await backend.post("/apply-template", {"messages": messages}, from_root=True)
    prompt = templated.get("prompt")
    if not isinstance(prompt, str):
        raise UpstreamProtocolError(f"The {spec.label} server's /apply-template gave no prompt.")
    tokens = await backend.post("/tokenize", {"content": prompt}, from_root=True)
    if not isinstance(tokens.get("tokens"), list):
        raise UpstreamProtocolError(f"The {spec.label} server's /tokenize gave no tokens.")
    return len(tokens["tokens"])


async def open_openai_passthrough_stream(
    *, spec: ModelSpec, path: str, body: dict[str, Any], what: str, context: CallContext
) -> ChatStream:
    """
    A streamed `/completions` (or `/responses`), its chunks passed through as `RawChunk`
    events. A completions stream asks for its usage chunk (which the client sees too); a
    Responses stream reports its usage in its last event anyway.
    """
    backend = _served_backend(spec, what)

    async def events() -> AsyncGenerator[StreamEvent, None]:
        payload = {**body, "model": spec.served_name, "stream": True}
        if path != "/responses":
            options = {**(body.get("stream_options") or {}), "include_usage": True}
            payload["stream_options"] = options
        async with concurrency_slot(spec, context), backend.stream(payload, path=path) as chunks:
            yield TextDelta("")  # marks "opened"
            async for chunk in chunks:
                if not isinstance(chunk, dict):
                    raise UpstreamProtocolError(f"The {spec.label} server sent a malformed chunk.")
                yield RawChunk(chunk)

    opened = events()
    try:
        await anext(opened)
    except BaseException:
        await opened.aclose()
        raise
    return ChatStream(opened, answered_by=spec.name, replica=_replica(spec))


async def chat_completion(
    *,
    spec: ModelSpec,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    context: CallContext,
) -> ChatResult:
    """
    Ask the model for a whole answer; if it fails before answering, ask its fallback models
    in order. `answered_by` says which model answered.

    With a JSON `response_format`, the answer is validated; an invalid one is sent back to the
    model with the errors, up to `JSON_RETRIES` times, and a final failure is an honest 502.
    """

    async def attempt(candidate: ModelSpec) -> ChatResult:
        payload = build_payload(spec=candidate, messages=messages, params=params, stream=False)
        result = await _chat_completion_on(candidate, payload, context)
        fallback_from = spec.name if candidate is not spec else None
        return replace(
            result,
            answered_by=candidate.name,
            fallback_from=fallback_from,
            replica=_replica(candidate),
        )

    return await _with_fallbacks(spec, attempt, context=context)


async def _chat_completion_on(
    spec: ModelSpec, payload: dict[str, Any], context: CallContext
) -> ChatResult:
    """
    One model's answer. A JSON answer that breaks its format is repaired (sent back with the
    errors) only when the model finished it ("stop"), at most `JSON_RETRIES` times per request;
    one cut by max_tokens ("length") is returned as it is, flagged, as OpenAI does. With the
    replica retries bounded by `MAX_RETRIES`, a request costs at most
    (1 + JSON_RETRIES) x (1 + MAX_RETRIES) upstream calls.
    """
    backend = get_backend(spec)
    response_format = payload.get("response_format")
    strict_tools = structured.strict_tool_schemas(payload.get("tools"))
    async with concurrency_slot(spec, context):
        result = first = _chat_result(spec, await _create(spec, backend, payload))
        if strict_tools:
            await _check_tool_arguments(spec, result, strict_tools)
        if not structured.wants_json(response_format) or _has_tool_calls(result):
            return result
        check = await structured.check_output_off_loop(result.response, response_format)
        for attempt in range(1, spec.json_retries + 1):
            if check.valid or result.finish_reason not in (None, "stop"):
                break
            logger.info(
                "Invalid JSON from the %s (attempt %d of repair): %s",
                spec.label,
                attempt,
                quote(structured.describe_errors(check.errors), DETAIL_LIMIT),
            )
            repair = structured.repair_messages(
                payload["messages"],
                output=result.response,
                check=check,
                response_format=response_format,
            )
            result = _chat_result(
                spec, await _create(spec, backend, {**payload, "messages": repair})
            )
            check = await structured.check_output_off_loop(result.response, response_format)
    repaired = result is not first
    metrics.record_structured_output(
        spec.name, "failed" if not check.valid else "repaired" if repaired else "valid"
    )
    if not check.valid:
        if result.finish_reason == "length":
            return replace(
                result, validation={"valid": False, "truncated": True, "errors": check.errors}
            )
        raise InvalidModelOutput(
            f"The model did not produce valid {response_format['type']} output "
            f"(after {spec.json_retries} repair attempt(s)): "
            f"{structured.describe_errors(check.errors)}",
            errors=check.errors,
            output=result.response,
        )
    return replace(result, response=check.text, parsed=check.parsed)


def _has_tool_calls(result: ChatResult) -> bool:
    message = (result.raw or {}).get("choices", [{}])[0].get("message") or {}
    return bool(message.get("tool_calls"))


async def _check_tool_arguments(
    spec: ModelSpec, result: ChatResult, strict_tools: dict[str, dict[str, Any]]
) -> None:
    """The arguments of calls to `strict` tools follow the tool's parameters schema (else 502)."""
    message = (result.raw or {}).get("choices", [{}])[0].get("message") or {}
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            calls.append((function.get("name"), function.get("arguments")))
    await _check_calls(spec, calls, strict_tools)


async def _check_calls(
    spec: ModelSpec, calls: list[tuple[Any, Any]], strict_tools: dict[str, dict[str, Any]]
) -> None:
    for name, arguments in calls:
        if name not in strict_tools:
            continue
        arguments = arguments if isinstance(arguments, str) else ""
        response_format = structured.schema_format(strict_tools[name])
        check = await structured.check_output_off_loop(arguments, response_format)
        if not check.valid:
            raise InvalidModelOutput(
                f"The {spec.label} called tool '{quote(name, 60)}' with arguments "
                f"that break its strict schema: {structured.describe_errors(check.errors)}",
                errors=check.errors,
                output=arguments,
            )


def _add_tool_call_deltas(calls: dict[Any, list[Any]], delta: dict[str, Any]) -> None:
    """Reassemble streamed tool calls: per index, the name, then the arguments in pieces."""
    for part in delta.get("tool_calls") or ():
        function = part.get("function") if isinstance(part, dict) else None
        if not isinstance(function, dict):
            continue
        call = calls.setdefault(part.get("index"), ["", ""])
        if isinstance(function.get("name"), str):
            call[0] = function["name"]
        if isinstance(function.get("arguments"), str):
            call[1] += function["arguments"]


async def open_chat_stream(
    *,
    spec: ModelSpec,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    context: CallContext,
) -> ChatStream:
    """
    Start a streamed answer and return its events.

    The upstream request is open and its status checked when this returns, so a failure
    becomes an HTTP error before any byte reaches the client. The returned generator owns the
    upstream request and the concurrency slot: closing it, finishing it or cancelling it
    (a client disconnect) releases both. With a JSON `response_format`, the last event says
    whether the whole answer was valid; nothing is repaired mid-stream. A model that fails
    before its first byte hands the request to its fallback models, in order.
    """

    async def attempt(candidate: ModelSpec) -> ChatStream:
        payload = build_payload(spec=candidate, messages=messages, params=params, stream=True)
        return await _open_stream_on(spec, candidate, payload, raw=False, context=context)

    return await _with_fallbacks(spec, attempt, context=context)


async def _open_stream_on(
    asked: ModelSpec, spec: ModelSpec, payload: dict[str, Any], *, raw: bool, context: CallContext
) -> ChatStream:
    events = _stream_events(
        spec=spec, backend=get_backend(spec), payload=payload, raw=raw, context=context
    )
    try:
        await anext(events)  # runs up to the first yield: slot taken, upstream answered 2xx
    except BaseException:
        await events.aclose()
        raise
    fallback_from = asked.name if spec is not asked else None
    return ChatStream(
        events, answered_by=spec.name, fallback_from=fallback_from, replica=_replica(spec)
    )


async def _stream_events(
    *,
    spec: ModelSpec,
    backend: ChatBackend,
    payload: dict[str, Any],
    raw: bool = False,
    context: CallContext,
) -> AsyncGenerator[StreamEvent, None]:
    async with concurrency_slot(spec, context), contextlib.AsyncExitStack() as stack:
        chunks = await _open_stream(spec, backend, payload, stack)
        yield TextDelta("")  # marks "opened"; consumed by open_chat_stream
        model, finish_reason, usage = spec.name, None, None
        pieces: list[str] = []
        strict_tools = structured.strict_tool_schemas(payload.get("tools")) if raw else {}
        tool_calls: dict[Any, list[Any]] = {}
        async for chunk in chunks:
            if not isinstance(chunk, dict):
                raise UpstreamProtocolError(f"The {spec.label} server sent a malformed chunk.")
            model = chunk.get("model") or model
            usage = usage_of(chunk.get("usage")) or usage
            if raw:
                yield RawChunk(chunk)
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    raise UpstreamProtocolError(f"The {spec.label} server sent a malformed chunk.")
                if strict_tools and choice.get("index", 0) == 0:
                    _add_tool_call_deltas(tool_calls, choice.get("delta") or {})
                delta = (choice.get("delta") or {}).get("content")
                if delta and choice.get("index", 0) == 0:
                    pieces.append(delta)
                    if not raw:
                        yield TextDelta(delta)
                finish_reason = choice.get("finish_reason") or finish_reason
        # The calls are sent already; a broken one ends the stream with an in-band error.
        await _check_calls(spec, [tuple(call) for call in tool_calls.values()], strict_tools)
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
            metrics.record_structured_output(spec.name, "valid" if check.valid else "failed")
        _annotate_usage(usage)
        yield StreamEnd(
            model=model, finish_reason=finish_reason, usage=usage, validation=validation
        )


# --- json_schema on servers that refuse it ----------------------------------------------------


def _schema_payload(spec: ModelSpec, payload: dict[str, Any]) -> dict[str, Any]:
    response_format = payload.get("response_format") or {}
    if response_format.get("type") != "json_schema":
        return payload
    # A server that refused a native json_schema once is not asked again (the backend, one
    # per model and process, remembers it).
    refused = getattr(get_backend(spec), "refuses_native_schema", False)
    if spec.json_schema_mode == "prompt" or (spec.json_schema_mode == "auto" and refused):
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
        "with the schema in a system message (%s=prompt makes this permanent).",
        spec.label,
        exc.upstream_status,
        spec.setting("json_schema_mode"),
    )
    get_backend(spec).refuses_native_schema = True
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
    usage = usage_of(data.get("usage"))
    _annotate_usage(usage)
    return ChatResult(
        response=message.get("content") or "",
        model=data.get("model") or spec.name,
        finish_reason=choice.get("finish_reason"),
        usage=usage,
        raw=data,
    )


def _annotate_usage(usage: dict[str, int] | None) -> None:
    if usage:
        timing.annotate(
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )


async def readiness() -> dict[str, Any]:
    """
    Whether every model of the catalog can answer: its embedded model is loaded, or at least
    one of its servers answers HTTP and is not ejected. Per model and per replica; shows no
    secret (servers appear as scheme://host:port only).
    """
    registry = get_registry()
    catalog = registry.catalog

    async def report(spec: ModelSpec) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": spec.name, "in_flight": slots_in_use(spec)}
        if spec.is_embedded:
            return {**entry, "backend": "embedded", "ready": registry.loaded(spec)}
        backend = registry.backend(spec)
        replicas = backend.pool.replicas
        reachable = await asyncio.gather(*(backend.probe(r) for r in replicas))
        return {
            **entry,
            "backend": "server",
            "routing": backend.pool.mode,
            "ready": any(
                ok and not backend.pool.ejected(r)
                for r, ok in zip(replicas, reachable, strict=True)
            ),
            "servers": [
                {
                    "server": r.location,
                    "reachable": ok,
                    "ejected": backend.pool.ejected(r),
                    "in_flight": r.in_flight,
                    **replica_load.describe(r.load),
                }
                for r, ok in zip(replicas, reachable, strict=True)
            ],
        }

    reports = await asyncio.gather(*(report(spec) for spec in catalog))
    # The seed models keep their keys ("text", "image"); catalog models go by name.
    seed_keys = {"TEXT_MODEL": "text", "IMAGE_MODEL": "image"}
    models = {
        seed_keys.get(spec.origin, spec.name): r for spec, r in zip(catalog, reports, strict=True)
    }
    roles = {
        "text": catalog.text.name if catalog.text else None,
        "image": catalog.image.name if catalog.image else None,
    }
    return {"ready": all(r["ready"] for r in reports), "defaults": roles, "models": models}


def seed_image_limits() -> dict[str, int]:
    """The image limits of the seed variables (`IMAGE_MODEL__MAX_IMAGE_*`)."""
    raw = settings.LLMAPI_MODELS["image"]
    return {"max_bytes": raw["max_image_bytes"], "max_side": raw["max_image_side"]}


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


def usage_of(raw: Any) -> dict[str, int] | None:
    """The token counts of a server's `usage` object (the integer ones), or None."""
    if not isinstance(raw, dict):
        return None
    if "input_tokens" in raw and "prompt_tokens" not in raw:  # the Responses API's names
        raw = {
            "prompt_tokens": raw.get("input_tokens"),
            "completion_tokens": raw.get("output_tokens"),
            "total_tokens": raw.get("total_tokens"),
        }
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {key: raw[key] for key in keys if isinstance(raw.get(key), int)} or None
