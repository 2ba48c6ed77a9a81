"""
The one accounted path: every call to a model goes through here, whatever the endpoint.

    caller = Caller.from_request(request, endpoint="v1/chat/completions")
    spec = calls.resolve_model(caller, name, capability="chat")
    answer, headers = await calls.openai_chat(caller, spec=spec, body=body)

Each call, in one place that views cannot skip:

1. **Scope.** `resolve_model` refuses a model outside the key's scope (403 on the seed API, the
   404 of a model that does not exist on /v1), or without the capability asked for (400). The
   inference core then checks the scope again for every fallback it tries
   (`CallContext.may_use`): a key never gets an answer from a model it may not use.
2. **Quota.** The key's (and its team's) quota is reserved for what the request can really
   use: `n` answers of the larger of `max_tokens` and `max_completion_tokens`, capped by the
   model's configured `max_tokens` (its output limit; larger values sent to a server are
   lowered to it), or that limit when the request names none; plus the prompt. Embeddings
   reserve their input. A request that alone could exceed a remaining budget is refused.
3. **The call**, holding one of the model's slots (`inference.services`).
4. **Settlement and the ledger.** A whole answer settles with its real token count and writes
   one ledger row; a stream settles and writes its row when its events end, however they end,
   with the server's usage or, for a stream cut short before the server sent it, a count of
   what was relayed. A failure before the answer settles at once and is written with its
   status.

With shared limits (REDIS_URL) the reservation is started before the call and sent with the
model slot's acquisition in one round trip; the core awaits it (`CallContext.admitted`) once
it holds the slot, before it calls the model server, and a refused quota gives the slot back.

Views import this module, never the model calls of `inference.services`: an import-linter
contract (`scripts/test`) forbids it, and `tests/gateway/test_routes.py` walks the URLconf to
prove that every route which can reach a model is refused over quota and leaves a ledger row.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from accounts.authentication import check_model_allowed
from gateway.statuses import status_of_failure
from inference import services
from inference.catalog import Catalog, ModelSpec
from inference.exceptions import CapabilityMissing, InvalidParameter, ModelNotFound, quote
from inference.registry import get_registry
from inference.services import CallContext
from infra.request_ids import request_id_var
from limits.admission import PendingReservation
from limits.flows import flow_for
from limits.quotas import Reservation
from limits.slots import is_preemption
from limits.stores import get_quota_store
from usage import ledger

# What views need of the core besides the calls: the answers' types and the image helpers.
ChatResult = services.ChatResult
ChatStream = services.ChatStream
StreamEvent = services.StreamEvent
TextDelta = services.TextDelta
RawChunk = services.RawChunk
StreamEnd = services.StreamEnd
PassthroughResult = services.PassthroughResult
prepare_uploads = services.prepare_uploads
seed_image_limits = services.seed_image_limits
image_chat_messages = services.image_chat_messages

PRIORITY_HEADER = "X-LLMAPI-Priority"

Answer = TypeVar("Answer", services.ChatResult, services.ChatStream, services.PassthroughResult)

PRIORITIES = ("interactive", "batch")


@dataclass(frozen=True)
class Caller:
    """Who is asking, through which endpoint: what every model call is accounted to."""

    principal: Any
    endpoint: str
    request_id: str = ""
    # "interactive" or "batch" (lower): the fair scheduler's class for the model slots.
    priority: str = "interactive"
    # /v1 hides a model outside the key's scope behind the 404 of a model that does not exist.
    hide_models: bool = False
    # Whether an interactive request may cut this call to take its model slot (batch lines,
    # which run again; never a client's request).
    preemptible: bool = False

    @classmethod
    def from_request(cls, request: Any, *, endpoint: str) -> Caller:
        """
        The caller of a request: its key, and its priority (the key's, or lower when the
        request asks with `X-LLMAPI-Priority: batch`).
        """
        key_priority = getattr(request.user, "priority", "interactive") or "interactive"
        priority = (request.headers.get(PRIORITY_HEADER) or "").strip().lower()
        if priority and priority not in PRIORITIES:
            raise InvalidParameter(
                PRIORITY_HEADER,
                f"{PRIORITY_HEADER} must be one of {', '.join(PRIORITIES)}.",
            )
        return cls(
            principal=request.user,
            endpoint=endpoint,
            request_id=request_id_var.get(),
            priority=lower_priority(key_priority, priority),
            hide_models=endpoint.startswith("v1/"),
        )

    def may_use(self, spec: ModelSpec) -> bool:
        """Whether the caller's key may use this model (by its name or any alias)."""
        allowed = getattr(self.principal, "may_use", None)
        return allowed is None or allowed(spec.name, *spec.aliases)


def lower_priority(key_priority: str, asked: str) -> str:
    """A request may lower its priority below its key's, never raise it."""
    if key_priority not in PRIORITIES:
        key_priority = "interactive"
    if asked in PRIORITIES and PRIORITIES.index(asked) > PRIORITIES.index(key_priority):
        return asked
    return key_priority


def catalog() -> Catalog:
    """The models being served (for listings such as GET /v1/models)."""
    return get_registry().catalog


def may_use(principal: Any, spec: ModelSpec) -> bool:
    """Whether `principal` may use the model (for listings such as GET /v1/models)."""
    allowed = getattr(principal, "may_use", None)
    return allowed is None or allowed(spec.name, *spec.aliases)


CAPABILITY_NAMES = {
    "chat": "chat",
    "vision": "accept images",
    "embeddings": "make embeddings",
    "tools": "call tools",
    "responses": "speak the Responses API",
}


def resolve_model(
    caller: Caller,
    name: str | None,
    *,
    role: str = "text",
    capability: str = "chat",
    require: bool = True,
) -> ModelSpec:
    """
    The model a request asks for (by name or alias, or the seed endpoints' default for
    `role`), checked against the key's scope and (unless not `require`d) for `capability`.
    """
    spec = services.resolve_model(name, role=role, capability=capability or "chat")
    check_scope(caller, spec)
    if require and capability:
        require_capability(spec, capability)
    return spec


def require_capability(spec: ModelSpec, capability: str) -> None:
    """A model without the capability a request needs is a 400 that says so."""
    if not spec.has(capability):
        raise CapabilityMissing(
            f"The model '{quote(spec.name, 100)}' does not "
            f"{CAPABILITY_NAMES.get(capability, capability)}; GET /v1/models lists each "
            "model's capabilities."
        )


def check_scope(caller: Caller, spec: ModelSpec) -> None:
    """Refuse a model outside the key's scope (see `Caller.hide_models`)."""
    if caller.hide_models:
        if not caller.may_use(spec):
            raise ModelNotFound(
                f"The model '{quote(spec.name, 100)}' does not exist; GET /v1/models lists them."
            )
        return
    check_model_allowed(caller.principal, spec.name, *spec.aliases)


# --- What a request may use ----------------------------------------------------------------


def whole_number(body: Mapping[str, Any], name: str, *, minimum: int = 0) -> int | None:
    """A client's integer field, or None when absent; anything else is a 400 naming it."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameter(name, f"'{name}' must be an integer.")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise InvalidParameter(name, f"'{name}' must be an integer.")
        value = int(value)
    if value < minimum:
        raise InvalidParameter(name, f"'{name}' must be at least {minimum}.")
    return value


def output_limit(spec: ModelSpec) -> int:
    """The most one answer of this model may be: its configured max_tokens."""
    return max(1, int(spec.defaults.get("max_tokens") or 1))


def capped_body(spec: ModelSpec, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """
    The body with `max_tokens`/`max_completion_tokens` checked and lowered to the model's
    output limit, and the completion tokens the request may use in all (`n` answers).
    """
    limit = output_limit(spec)
    asked = [
        whole_number(body, name, minimum=1) for name in ("max_tokens", "max_completion_tokens")
    ]
    answers = whole_number(body, "n", minimum=1) or 1
    best_of = whole_number(body, "best_of", minimum=1) or 1
    given = [value for value in asked if value is not None]
    per_answer = min(max(given), limit) if given else limit
    capped = dict(body)
    for name, value in zip(("max_tokens", "max_completion_tokens"), asked, strict=True):
        if value is not None and value > limit:
            capped[name] = limit
    return capped, per_answer * max(answers, best_of)


def prompt_chars(value: Any, depth: int = 0) -> int:
    """Characters of text in messages, content parts, prompts or inputs (token lists count 4 a token)."""
    if isinstance(value, str):
        return len(value)
    if depth > 8:
        return 0
    if isinstance(value, list):
        if value and all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return 4 * len(value)
        return sum(prompt_chars(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return sum(
            prompt_chars(value[key], depth + 1)
            for key in ("content", "text", "arguments", "input", "prompt")
            if key in value
        )
    return 0


# --- The account of one call ---------------------------------------------------------------


class _Account:
    """One call's reservation and ledger row."""

    def __init__(self, caller: Caller, *, spec: ModelSpec, tokens: int, prompt_tokens: int) -> None:
        self.caller = caller
        self.model = spec.name
        self.started = time.monotonic()
        self.tokens = tokens
        self.prompt_tokens = prompt_tokens
        self.reservation: Reservation | None = None
        self._pending: PendingReservation | None = None

    async def reserve(self) -> None:
        """
        Reserve the quota: at once in-process; with shared limits, one made ahead for a busy
        key (`limits.redis_ahead`), or started here and sent with the model slot's
        acquisition, known after `reserved`.
        """
        store, subject = get_quota_store(), self.caller.principal.quota
        if store.shared and not subject.unlimited:
            self.reservation = store.take_ready(subject, tokens=self.tokens)
            if self.reservation is None:
                self._pending = PendingReservation(store.reserve(subject, tokens=self.tokens))
        else:
            self.reservation = await store.reserve(subject, tokens=self.tokens)

    def context(self, *, requires: tuple[str, ...] = ()) -> CallContext:
        pending = self._pending
        return CallContext(
            may_use=self.caller.may_use,
            admitted=pending.confirm if pending is not None else None,
            requires=requires,
            priority=self.caller.priority,
            flow=flow_for(
                self.caller.principal,
                priority=self.caller.priority,
                preemptible=self.caller.preemptible,
            ),
        )

    async def reserved(self) -> None:
        """Wait for a reservation started by `reserve`: raises a refusal (429) or an outage."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.reservation = await pending.result()

    @property
    def headers(self) -> dict[str, str]:
        return self.reservation.headers if self.reservation is not None else {}

    async def close(
        self,
        *,
        status: int,
        model: str = "",
        replica: str = "",
        usage: dict[str, int] | None = None,
        ttft: float | None = None,
    ) -> None:
        usage = usage or {}
        try:
            if self.reservation is not None:
                total = usage.get("total_tokens")
                if total is None and usage:
                    total = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
                await get_quota_store().settle(self.reservation, used_tokens=total)
        finally:
            ledger.record(
                principal=self.caller.principal,
                model=model or self.model,
                replica=replica,
                endpoint=self.caller.endpoint,
                status=status,
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
                latency_ms=(time.monotonic() - self.started) * 1000,
                ttft_ms=None if ttft is None else (ttft - self.started) * 1000,
                request_id=self.caller.request_id,
            )


class _WatchedEvents:
    """
    A stream's events, passed through; when they end (finished, failed, or closed early
    because the client went away) the reservation is settled and the ledger row written,
    exactly once. A class rather than a generator so that closing it settles even when it
    was never iterated. Without the server's usage (a stream cut short), what was relayed is
    counted instead, at about four characters a token.
    """

    def __init__(self, account: _Account, stream: services.ChatStream) -> None:
        self._account = account
        self._stream = stream
        self._events = stream.events
        self._usage: dict[str, int] | None = None
        self._relayed = 0
        self._first: float | None = None
        self._ended = False

    def __aiter__(self) -> _WatchedEvents:
        return self

    async def __anext__(self) -> services.StreamEvent:
        try:
            event = await anext(self._events)
        except StopAsyncIteration:
            await self._end(200)
            raise
        except BaseException as exc:
            # The response's status is sent already; the row keeps what went wrong.
            await self._end(status_of_failure(exc))
            raise
        if isinstance(event, services.TextDelta):
            if event.text:
                self._relayed += len(event.text)
                if self._first is None:
                    self._first = time.monotonic()
        elif isinstance(event, services.RawChunk):
            if self._first is None:
                self._first = time.monotonic()
            chunk = event.chunk
            final = (
                chunk.get("response") if str(chunk.get("type")).startswith("response.") else None
            )
            usage = services.usage_of(chunk.get("usage") or (final or {}).get("usage"))
            if usage:
                self._usage = usage
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict):
                    self._relayed += prompt_chars(choice.get("delta")) + prompt_chars(
                        choice.get("text")
                    )
                    delta = choice.get("delta")
                    tool_calls = delta.get("tool_calls") if isinstance(delta, dict) else None
                    for call in tool_calls if isinstance(tool_calls, list) else ():
                        if isinstance(call, dict):  # a malformed chunk is the reader's to refuse
                            self._relayed += prompt_chars(call.get("function"))
        elif isinstance(event, services.StreamEnd):
            self._usage = event.usage or self._usage
        return event

    async def aclose(self) -> None:
        await self._end(499)  # a no-op when the events already ended

    async def fail(self, exc: BaseException) -> None:
        """End the events for a failure the caller found in them (an answer it cannot use)."""
        await self._end(status_of_failure(exc))

    def _counted_usage(self) -> dict[str, int]:
        if self._usage:
            return self._usage
        completion = -(-self._relayed // 4)
        prompt = self._account.prompt_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def _end(self, status: int) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            await self._events.aclose()
        finally:
            await self._account.close(
                status=status,
                model=self._stream.answered_by,
                replica=self._stream.replica,
                usage=self._counted_usage(),
                ttft=self._first,
            )


async def accounted(
    caller: Caller,
    *,
    spec: ModelSpec,
    tokens: int,
    prompt_tokens: int,
    call: Callable[[CallContext], Awaitable[Answer]],
    requires: tuple[str, ...] = (),
) -> tuple[Answer, dict[str, str]]:
    """
    Check the scope, reserve `tokens` of the quota, run `call` with the call's context and
    account for its answer (see the module docstring). Returns the answer (a stream's events
    wrapped) and the x-ratelimit-* headers for the response. The named calls below use it;
    a new kind of call should too.
    """
    check_scope(caller, spec)
    account = _Account(caller, spec=spec, tokens=tokens, prompt_tokens=prompt_tokens)
    try:
        await account.reserve()
        try:
            answer = await call(account.context(requires=requires))
        finally:
            await account.reserved()  # a refused quota is the answer, whatever the call did
    except BaseException as exc:
        # A batch line cut for an interactive request runs again: the cut call is on the
        # ledger, but charges nothing (the reservation is given back).
        cut = {"total_tokens": 0} if is_preemption(exc) else None
        await account.close(status=status_of_failure(exc), usage=cut)
        raise
    if isinstance(answer, services.ChatStream):
        stream: services.ChatStream = answer
        events = cast(AsyncGenerator[services.StreamEvent, None], _WatchedEvents(account, stream))
        return cast(Answer, replace(stream, events=events)), account.headers
    await account.close(
        status=200, model=answer.answered_by, replica=answer.replica, usage=answer.usage
    )
    return answer, account.headers


def _prompt_tokens(chars: int, messages: int = 1) -> int:
    return -(-chars // 4) + 4 * messages


# --- The calls -----------------------------------------------------------------------------


async def chat_completion(
    caller: Caller, *, spec: ModelSpec, messages: list[dict[str, Any]], params: dict[str, Any]
) -> tuple[services.ChatResult, dict[str, str]]:
    """A whole answer for the seed endpoints (the model's defaults fill what params lack)."""
    params, completion = _seed_params(spec, params)
    prompt = _prompt_tokens(prompt_chars(messages), len(messages))
    return await accounted(
        caller,
        spec=spec,
        tokens=prompt + completion,
        prompt_tokens=prompt,
        requires=_required(spec, messages),
        call=lambda context: services.chat_completion(
            spec=spec, messages=messages, params=params, context=context
        ),
    )


async def open_chat_stream(
    caller: Caller, *, spec: ModelSpec, messages: list[dict[str, Any]], params: dict[str, Any]
) -> tuple[services.ChatStream, dict[str, str]]:
    """A streamed answer for the seed endpoints; see `services.open_chat_stream`."""
    params, completion = _seed_params(spec, params)
    prompt = _prompt_tokens(prompt_chars(messages), len(messages))
    return await accounted(
        caller,
        spec=spec,
        tokens=prompt + completion,
        prompt_tokens=prompt,
        requires=_required(spec, messages),
        call=lambda context: services.open_chat_stream(
            spec=spec, messages=messages, params=params, context=context
        ),
    )


async def openai_chat(
    caller: Caller, *, spec: ModelSpec, body: dict[str, Any]
) -> tuple[services.ChatResult, dict[str, str]]:
    """A /v1 chat completion, passed through (`raw` holds the server's answer)."""
    body, messages, prompt, completion = _chat_reservation(spec, body)
    return await accounted(
        caller,
        spec=spec,
        tokens=prompt + completion,
        prompt_tokens=prompt,
        requires=_required(spec, messages, body),
        call=lambda context: services.openai_chat_completion(spec=spec, body=body, context=context),
    )


async def open_openai_chat_stream(
    caller: Caller, *, spec: ModelSpec, body: dict[str, Any]
) -> tuple[services.ChatStream, dict[str, str]]:
    """A /v1 streamed chat completion, chunk by chunk (`RawChunk` events, then `StreamEnd`)."""
    body, messages, prompt, completion = _chat_reservation(spec, body)
    return await accounted(
        caller,
        spec=spec,
        tokens=prompt + completion,
        prompt_tokens=prompt,
        requires=_required(spec, messages, body),
        call=lambda context: services.open_openai_chat_stream(
            spec=spec, body=body, context=context
        ),
    )


async def openai_embeddings(
    caller: Caller, *, spec: ModelSpec, body: dict[str, Any]
) -> tuple[services.PassthroughResult, dict[str, str]]:
    """Embeddings, passed through; counted by their input tokens."""
    prompt = _prompt_tokens(prompt_chars(body.get("input")), 0)
    return await accounted(
        caller,
        spec=spec,
        tokens=prompt,
        prompt_tokens=prompt,
        requires=("embeddings",),
        call=lambda context: services.openai_passthrough(
            spec=spec, path="/embeddings", body=body, what="embeddings endpoint", context=context
        ),
    )


async def count_chat_tokens(
    caller: Caller,
    *,
    spec: ModelSpec,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
) -> tuple[services.PassthroughResult, dict[str, str]]:
    """
    A chat prompt's tokens by the model server's tokenizer (`/v1/messages/count_tokens`);
    counted like embeddings, by that input.
    """
    prompt = _prompt_tokens(prompt_chars(messages), len(messages))
    return await accounted(
        caller,
        spec=spec,
        tokens=prompt,
        prompt_tokens=prompt,
        call=lambda context: services.count_chat_tokens(
            spec=spec, messages=messages, tools=tools, context=context
        ),
    )


async def openai_legacy_completion(
    caller: Caller, *, spec: ModelSpec, body: dict[str, Any]
) -> tuple[services.PassthroughResult, dict[str, str]]:
    """A legacy text completion (`/v1/completions`), whole, passed through."""
    body, completion = _legacy_body(spec, body)
    prompt = _prompt_tokens(prompt_chars(body.get("prompt")), 1)
    return await _passthrough(caller, spec, "/completions", LEGACY, body, prompt, completion)


async def open_openai_legacy_stream(
    caller: Caller, *, spec: ModelSpec, body: dict[str, Any]
) -> tuple[services.ChatStream, dict[str, str]]:
    """A legacy text completion, streamed (`RawChunk` events)."""
    body, completion = _legacy_body(spec, body)
    prompt = _prompt_tokens(prompt_chars(body.get("prompt")), 1)
    return await _passthrough(
        caller, spec, "/completions", LEGACY, body, prompt, completion, stream=True
    )


async def openai_responses(
    caller: Caller, *, spec: ModelSpec, body: dict[str, Any]
) -> tuple[services.PassthroughResult, dict[str, str]]:
    """A Responses API request, whole, passed through to a model whose servers speak it."""
    body, prompt, completion = _responses_reservation(spec, body)
    return await _passthrough(caller, spec, "/responses", RESPONSES, body, prompt, completion)


async def open_openai_responses_stream(
    caller: Caller, *, spec: ModelSpec, body: dict[str, Any]
) -> tuple[services.ChatStream, dict[str, str]]:
    """A Responses API request, streamed (its events as `RawChunk`s), passed through."""
    body, prompt, completion = _responses_reservation(spec, body)
    return await _passthrough(
        caller, spec, "/responses", RESPONSES, body, prompt, completion, stream=True
    )


async def _passthrough(
    caller: Caller,
    spec: ModelSpec,
    path: str,
    what: str,
    body: dict[str, Any],
    prompt: int,
    completion: int,
    *,
    stream: bool = False,
) -> Any:
    """Another OpenAI endpoint's request, sent as it is (whole or streamed), accounted."""
    send = services.open_openai_passthrough_stream if stream else services.openai_passthrough
    return await accounted(
        caller,
        spec=spec,
        tokens=prompt + completion,
        prompt_tokens=prompt,
        call=lambda context: send(spec=spec, path=path, body=body, what=what, context=context),
    )


RESPONSES = "Responses API"


def _chat_reservation(
    spec: ModelSpec, body: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], int, int]:
    """A /v1 chat body capped to the model's limit, its messages, and its prompt and completion tokens."""
    body, completion = capped_body(spec, body)
    messages = body.get("messages") or []
    return body, messages, _prompt_tokens(prompt_chars(messages), len(messages)), completion


def _responses_reservation(
    spec: ModelSpec, body: dict[str, Any]
) -> tuple[dict[str, Any], int, int]:
    """A Responses body capped to the model's limit, and its prompt and completion tokens."""
    body, completion = _responses_body(spec, body)
    prompt = _prompt_tokens(
        prompt_chars(body.get("input")) + prompt_chars(body.get("instructions"))
    )
    return body, prompt, completion


def _responses_body(spec: ModelSpec, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """`max_output_tokens` lowered to the model's output limit, and what the request may use."""
    limit = output_limit(spec)
    asked = whole_number(body, "max_output_tokens", minimum=1)
    if asked is None:
        return body, limit
    if asked > limit:
        body = {**body, "max_output_tokens": limit}
    return body, min(asked, limit)


LEGACY = "legacy completions endpoint"
# OpenAI's default max_tokens for the legacy completions API.
LEGACY_DEFAULT_MAX_TOKENS = 16


def _legacy_body(spec: ModelSpec, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    body = body if "max_tokens" in body else {**body, "max_tokens": LEGACY_DEFAULT_MAX_TOKENS}
    capped, completion = capped_body(spec, body)
    prompts = body.get("prompt")
    if isinstance(prompts, list) and prompts and not isinstance(prompts[0], int):
        completion *= len(prompts)  # one answer (or n) per prompt
    return capped, completion


def _seed_params(spec: ModelSpec, params: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The seed parameters with max_tokens lowered to the model's limit, and what it may use."""
    limit = output_limit(spec)
    asked = whole_number(params, "max_tokens", minimum=1)
    if asked is None:
        return params, limit
    if asked > limit:
        params = {**params, "max_tokens": limit}
    return params, min(asked, limit)


def _required(
    spec: ModelSpec, messages: list[dict[str, Any]], body: Mapping[str, Any] | None = None
) -> tuple[str, ...]:
    """The capabilities a fallback must have to take this request."""
    needs: list[str] = []
    if spec.has("vision") and services.has_images(messages):
        needs.append("vision")
    if body is not None and services.uses_tools(body):
        needs.append("tools")
    return tuple(needs)
