"""
What each line URL of a batch means: how its body is checked before the batch starts, and how
it is run once a line is claimed. Table-driven: another endpoint is one more `LineEndpoint`.

A line runs through the same accounted path as the interactive request to its URL: the key's
model scope, its token budgets, the model's concurrency slot, the ledger row (endpoint
`v1/batches`) and the metrics. The caller is the batch's owner at the `batch` priority.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rest_framework import serializers

from accounts.principals import Principal
from api.accounting import accounted
from api.exceptions import openai_exception_handler
from inference import services
from inference.catalog import ModelSpec
from inference.exceptions import CapabilityMissing
from inference.images import prepare_message_images
from openai_compat.presenters import openai_completion
from openai_compat.serializers import (
    OpenAIChatRequestSerializer,
    OpenAICompletionsRequestSerializer,
    OpenAIEmbeddingsRequestSerializer,
    has_image_parts,
    passthrough_body,
)

LEDGER_ENDPOINT = "v1/batches"
PRIORITY = "batch"


@dataclass(frozen=True, slots=True)
class BatchCaller:
    """Who a line runs as: the batch's owner, at the batch priority, without its request rate."""

    principal: Principal
    request_id: str
    priority: str = PRIORITY
    rate_limited: bool = False

    @property
    def user(self) -> Principal:  # what the accounted path reads of a request
        return self.principal


Run = Callable[[BatchCaller, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class LineEndpoint:
    url: str
    serializer: type[serializers.Serializer]
    run: Run


def _result(raw: dict[str, Any], spec: ModelSpec) -> services.ChatResult:
    """A passed-through answer as the accounted path reads one (its usage and who answered)."""
    usage = raw.get("usage") if isinstance(raw.get("usage"), dict) else None
    return services.ChatResult(
        response="",
        model=spec.name,
        finish_reason=None,
        usage={k: v for k, v in (usage or {}).items() if isinstance(v, int)} or None,
        answered_by=spec.name,
        raw=raw,
    )


async def _run_chat(caller: BatchCaller, body: dict[str, Any]) -> dict[str, Any]:
    messages = body["messages"]
    needs_vision = has_image_parts(messages)
    spec = services.resolve_model(body["model"], capability="vision" if needs_vision else "chat")
    if needs_vision:
        if not spec.has("vision"):
            raise CapabilityMissing(f"The model '{spec.name}' does not accept images.")
        messages = await prepare_message_images(
            messages, max_bytes=spec.max_image_bytes, max_side=spec.max_image_side
        )
    body = {**body, "messages": messages}
    result, _ = await accounted(
        caller,
        endpoint=LEDGER_ENDPOINT,
        spec=spec,
        messages=messages,
        params=body,
        call=lambda: services.openai_chat_completion(spec=spec, body=body),
        hide_models=True,
    )
    return openai_completion(
        result, completion_id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time())
    )


def _passthrough(path: str, capability: str, what: str) -> Run:
    async def run(caller: BatchCaller, body: dict[str, Any]) -> dict[str, Any]:
        spec = services.resolve_model(body["model"], capability=capability)
        if capability != "chat" and not spec.has(capability):
            raise CapabilityMissing(
                f"The model '{spec.name}' does not have the `{capability}` capability."
            )

        async def call() -> services.ChatResult:
            raw = await services.openai_passthrough(spec=spec, path=path, body=body, what=what)
            return _result(raw, spec)

        text = body.get("input", body.get("prompt"))
        prompt = [{"content": text if isinstance(text, str) else json.dumps(text)}]
        result, _ = await accounted(
            caller,
            endpoint=LEDGER_ENDPOINT,
            spec=spec,
            messages=prompt,
            params=body,
            call=call,
            hide_models=True,
        )
        return result.raw or {}

    return run


ENDPOINTS: dict[str, LineEndpoint] = {
    endpoint.url: endpoint
    for endpoint in (
        LineEndpoint("/v1/chat/completions", OpenAIChatRequestSerializer, _run_chat),
        LineEndpoint(
            "/v1/embeddings",
            OpenAIEmbeddingsRequestSerializer,
            _passthrough("/embeddings", "embeddings", "embeddings endpoint"),
        ),
        LineEndpoint(
            "/v1/completions",
            OpenAICompletionsRequestSerializer,
            _passthrough("/completions", "chat", "legacy completions endpoint"),
        ),
    )
}


class InvalidLine(Exception):
    """A line refused before the batch starts: its error-file entry's code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_body(url: str, body: Any) -> dict[str, Any]:
    """The body of a line to `url` as it will be sent, or InvalidLine saying what is wrong."""
    endpoint = ENDPOINTS[url]
    try:
        body = passthrough_body(body)
        serializer = endpoint.serializer(data=body)
        serializer.is_valid(raise_exception=True)
    except serializers.ValidationError as exc:
        message = error_body(exc)[1]["error"]["message"]
        raise InvalidLine("invalid_request", f"body: {message}") from None
    if body.get("stream"):
        raise InvalidLine("invalid_request", "body.stream: a batch line is answered whole.")
    return body


def error_body(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI error body the same failure gets from the interactive API."""
    response = openai_exception_handler(exc, {})
    # DRF's ErrorDetail strings become plain JSON.
    return response.status_code, json.loads(json.dumps(response.data))
