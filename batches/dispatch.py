"""
What each line URL of a batch means: how its body is checked before the batch starts, and how
it is run once a line is claimed. Table-driven: another endpoint is one more `LineEndpoint`.

A line runs through the one accounted path (`gateway.calls`), like the interactive request to
its URL: the key's model scope, its token budgets, the model's concurrency slot at the `batch`
priority, the ledger row (endpoint `v1/batches`). The caller is the batch's owner.
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
from api.exceptions import openai_exception_handler
from gateway import calls
from gateway.calls import PRIORITY_HEADER, Caller
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
from responses.serializers import ResponsesRequestSerializer
from responses.services import ResponseAnswer, create_response

LEDGER_ENDPOINT = "v1/batches"
PRIORITY = "batch"


def batch_caller(principal: Principal, request_id: str) -> Caller:
    """Who a line runs as: the batch's owner, at the batch priority, models hidden as on /v1."""
    return Caller(
        principal=principal,
        endpoint=LEDGER_ENDPOINT,
        request_id=request_id,
        priority=PRIORITY,
        hide_models=True,
        preemptible=True,  # the runner runs a cut line again (`BatchRunner._call`)
    )


Run = Callable[[Caller, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class LineEndpoint:
    url: str
    serializer: type[serializers.Serializer]
    run: Run


async def _run_chat(caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    messages = body["messages"]
    needs_vision = has_image_parts(messages)
    spec = calls.resolve_model(
        caller, body["model"], capability="vision" if needs_vision else "chat", require=False
    )
    if needs_vision:
        if not spec.has("vision"):
            raise CapabilityMissing(f"The model '{spec.name}' does not accept images.")
        messages = await prepare_message_images(
            messages, max_bytes=spec.max_image_bytes, max_side=spec.max_image_side
        )
    calls.require_capability(spec, "chat")
    result, _ = await calls.openai_chat(caller, spec=spec, body={**body, "messages": messages})
    return openai_completion(
        result, completion_id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time())
    )


async def _run_embeddings(caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    spec = calls.resolve_model(caller, body["model"], capability="embeddings")
    answer, _ = await calls.openai_embeddings(caller, spec=spec, body=body)
    return answer.body


class _LineRequest:
    """What the Responses API reads of a request, for a line: its caller and the batch priority."""

    def __init__(self, caller: Caller) -> None:
        self.user = caller.principal
        self.headers = {PRIORITY_HEADER: caller.priority}


async def _run_response(caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    serializer = ResponsesRequestSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    answer = await create_response(
        _LineRequest(caller),
        data={**body, **serializer.validated_data},
        sent=body,
        preemptible=caller.preemptible,
    )
    if not isinstance(answer, ResponseAnswer):  # refused when the batch started
        raise CapabilityMissing("A batch line is answered whole.")
    return answer.body


async def _run_legacy_completion(caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    spec = calls.resolve_model(caller, body["model"])
    answer, _ = await calls.openai_legacy_completion(caller, spec=spec, body=body)
    return answer.body


ENDPOINTS: dict[str, LineEndpoint] = {
    endpoint.url: endpoint
    for endpoint in (
        LineEndpoint("/v1/chat/completions", OpenAIChatRequestSerializer, _run_chat),
        LineEndpoint("/v1/embeddings", OpenAIEmbeddingsRequestSerializer, _run_embeddings),
        LineEndpoint("/v1/responses", ResponsesRequestSerializer, _run_response),
        LineEndpoint("/v1/completions", OpenAICompletionsRequestSerializer, _run_legacy_completion),
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
