"""
The Responses API on chat-completions model servers: translate, call through the accounted
path, translate back, store.

    answer = await create_response(request, data=data)   # a ResponseAnswer or a ResponseStream

A request's conversation is the previous response's (its history, input and output, when
`previous_response_id` names one this key may read) followed by this request's `input`. It is
sent to the model as a chat request (`chat_request.py`); the answer, whole or streamed chunk by
chunk, becomes Responses output through `translation.chat_events` and `presenters.py`. With
`store` (the default) the response and its conversation are kept for RESPONSES__RETENTION_DAYS
(`StoredResponse`), bounded in size (RESPONSES__MAX_STORED_BYTES) and in number per key
(RESPONSES__MAX_PER_KEY, the oldest deleted first).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import serializers

from api.serializers import check_total_chars
from api.streaming import stream_failure
from api.views import answered_headers
from gateway import calls
from gateway.calls import Caller
from inference.images import prepare_message_images
from infra.database import in_database_thread
from openai_compat.serializers import has_image_parts
from responses import chat_request, selectors
from responses.exceptions import ResponseNotFound
from responses.models import StoredResponse
from responses.presenters import ResponseBuilder, sse
from translation.chat_events import ChatEventTranslator, events_from_completion
from translation.exceptions import TranslationError

logger = logging.getLogger(__name__)

ENDPOINT = "v1/responses"


@dataclass
class ResponseAnswer:
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ResponseStream:
    frames: AsyncIterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Turn:
    """What one request adds to a conversation, and what is needed to store it."""

    owner: str
    team_id: int | None
    history: list[dict[str, Any]]
    items: list[dict[str, Any]]
    store: bool


async def create_response(
    request,
    *,
    data: dict[str, Any],
    sent: dict[str, Any] | None = None,
    preemptible: bool = False,
) -> ResponseAnswer | ResponseStream:
    """
    Answer a Responses request (see the module docstring): `data` as validated, `sent` as the
    client sent it (passed through as it is to a model whose servers speak the Responses API).
    `preemptible`: a batch line's call, which interactive work may cut (see `Caller`).
    """
    principal = request.user
    caller = replace(Caller.from_request(request, endpoint=ENDPOINT), preemptible=preemptible)
    asked = calls.resolve_model(caller, data["model"], capability="chat", require=False)
    if asked.has("responses"):
        sent = dict(sent or data)
        if "stream" in sent:  # as the gateway read it ("true" would reach a server as a string)
            sent["stream"] = data["stream"]
        return await _native_response(request, caller, asked, data=data, sent=sent)
    history: list[dict[str, Any]] = []
    previous_id = data.get("previous_response_id")
    if previous_id is not None:
        previous = await selectors.aget_response(previous_id, principal)
        if previous is None:
            raise ResponseNotFound(previous_id, field="previous_response_id")
        history = [*previous.history, *previous.input_items, *previous.response.get("output", [])]
    items = chat_request.normalize_input(data["input"])
    chat = chat_request.chat_body(data, history=history, items=items)
    body = chat.body
    try:
        check_total_chars(body["messages"])
    except serializers.ValidationError as exc:
        raise serializers.ValidationError({"input": exc.detail}) from None
    turn = _Turn(
        owner=selectors.owner_of(principal),
        team_id=getattr(principal, "team_id", None),
        history=history,
        items=items,
        store=data.get("store", True) is not False,
    )
    if turn.store:
        size = _size(history) + _size(items)
        if size > settings.RESPONSES_MAX_STORED_BYTES:
            raise serializers.ValidationError(
                {
                    "input": [
                        f"The conversation is {size} bytes; a stored one may have at most "
                        f"{settings.RESPONSES_MAX_STORED_BYTES} (RESPONSES__MAX_STORED_BYTES). "
                        "Start a new conversation, or send store: false with its items."
                    ]
                }
            )
    needs_vision = has_image_parts(body["messages"])
    spec = calls.resolve_model(
        caller, data["model"], capability="vision" if needs_vision else "chat", require=False
    )
    if needs_vision and not spec.has("vision"):
        raise serializers.ValidationError(
            {"input": [f"The model '{spec.name}' does not accept images; use the image model."]}
        )
    calls.require_capability(spec, "chat")
    if needs_vision:
        body["messages"] = await prepare_message_images(
            body["messages"], max_bytes=spec.max_image_bytes, max_side=spec.max_image_side
        )
    extra_headers = {}
    if chat.tools.skipped:
        extra_headers["X-LLMAPI-Skipped-Tools"] = ", ".join(chat.tools.skipped)[:500]
    request_echo = {
        key: value for key, value in data.items() if key not in ("input", "model", "stream")
    }
    if data.get("stream"):
        body["stream"] = True
        opened, quota_headers = await calls.open_openai_chat_stream(caller, spec=spec, body=body)
        builder = ResponseBuilder(
            request=request_echo, model=opened.answered_by, namespaced=chat.tools.namespaced
        )
        headers = {**answered_headers(opened), **quota_headers, **extra_headers}
        return ResponseStream(_stream_frames(opened.events, builder, turn), headers)
    result, quota_headers = await calls.openai_chat(caller, spec=spec, body=body)
    builder = ResponseBuilder(
        request=request_echo, model=result.answered_by, namespaced=chat.tools.namespaced
    )
    builder.apply_all(events_from_completion(_checked_answer(result)))
    headers = {**answered_headers(result), **quota_headers, **extra_headers}
    stored = await _store(builder.response(), turn)
    if turn.store and not stored:
        headers["X-LLMAPI-Stored"] = "false"
    return ResponseAnswer(builder.response(), headers)


def _checked_answer(result: calls.ChatResult) -> dict[str, Any]:
    """The server's answer, with a JSON answer's text as the gateway checked (and repaired) it."""
    raw = dict(result.raw or {})
    choices = list(raw.get("choices") or ())
    if choices and isinstance(choices[0], dict) and isinstance(choices[0].get("message"), dict):
        message = dict(choices[0]["message"])
        if isinstance(message.get("content"), str):
            message["content"] = result.response
        choices[0] = {**choices[0], "message": message}
        raw["choices"] = choices
    return raw


async def _stream_frames(events, builder: ResponseBuilder, turn: _Turn) -> AsyncIterator[bytes]:
    """The Responses stream events for a chat stream, as the chunks arrive; then stored."""
    translator = ChatEventTranslator()
    try:
        for event in builder.start():
            yield sse(event)
        async for item in events:
            if not isinstance(item, calls.RawChunk):
                continue
            for chat_event in translator.feed(item.chunk):
                for event in builder.events_for(chat_event):
                    yield sse(event)
        for chat_event in translator.finish():
            for event in builder.events_for(chat_event):
                yield sse(event)
    except (Exception, asyncio.CancelledError) as exc:
        failure = stream_failure(exc)
        if failure is None:
            raise  # the client went away: no one is left to tell
        detail, _status = failure
        code = "server_error"
        if isinstance(exc, TranslationError):
            code = "invalid_upstream_output"
            fail = getattr(events, "fail", None)
            if fail is not None:
                await fail(exc)  # the ledger keeps the server's fault, not a disconnect
        for event in builder.fail(detail, code=code):
            yield sse(event)
    finally:
        await events.aclose()
        if builder.status != "in_progress":
            await _store(builder.response(), turn)


def _size(value: Any) -> int:
    return len(orjson.dumps(value))


async def _store(response: dict[str, Any], turn: _Turn) -> bool:
    """Keep a finished response when its request asked to; False when it was not kept."""
    response_id = response.get("id")
    if not turn.store or not isinstance(response_id, str) or len(response_id) > 64:
        return False
    size = _size(turn.history) + _size(turn.items) + _size(response)
    if size > settings.RESPONSES_MAX_STORED_BYTES:
        logger.warning(
            "Response %s not stored: %d bytes (RESPONSES__MAX_STORED_BYTES)", response_id, size
        )
        return False
    return await _save(
        StoredResponse(
            id=response_id,
            owner=turn.owner,
            team_id=turn.team_id,
            created_at=timezone.now(),
            expires_at=timezone.now() + timedelta(days=settings.RESPONSES_RETENTION_DAYS),
            model=str(response.get("model") or "")[:200],
            status=str(response.get("status") or "")[:20],
            previous_response_id=str(response.get("previous_response_id") or "")[:64],
            history=turn.history,
            input_items=turn.items,
            response=response,
            size=size,
        )
    )


@in_database_thread
def _save(row: StoredResponse) -> bool:
    """Insert, then apply the bounds: expired rows go, and a key's oldest beyond its maximum."""
    try:
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError:  # a native server's id seen before: the first keeps it
        return False
    StoredResponse.objects.filter(expires_at__lte=timezone.now()).delete()
    keep = settings.RESPONSES_MAX_PER_KEY
    stale = (
        StoredResponse.objects.filter(owner=row.owner)
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)[keep : keep + 100]
    )
    stale_ids = list(stale)
    if stale_ids:
        StoredResponse.objects.filter(pk__in=stale_ids).delete()
    return True


# --- models whose servers speak the Responses API ----------------------------------------------

RESPONSES_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


async def _native_response(
    request, caller: Caller, spec, *, data: dict[str, Any], sent: dict[str, Any]
) -> ResponseAnswer | ResponseStream:
    """
    The request passed through as sent. The server keeps its own conversation state; the
    gateway keeps which key made each response (a copy of it, as for a translated one), so
    `previous_response_id`, retrieval and deletion follow the same ownership rules.
    """
    principal = request.user
    previous_id = data.get("previous_response_id")
    if previous_id is not None and await selectors.aget_response(previous_id, principal) is None:
        raise ResponseNotFound(previous_id, field="previous_response_id")
    try:
        items = chat_request.normalize_input(data["input"])
    except serializers.ValidationError:
        items = []  # a shape this gateway does not translate: the server's business
    turn = _Turn(
        owner=selectors.owner_of(principal),
        team_id=getattr(principal, "team_id", None),
        history=[],
        items=items,
        store=data.get("store", True) is not False,
    )
    if data.get("stream"):
        opened, quota_headers = await calls.open_openai_responses_stream(
            caller, spec=spec, body=sent
        )
        headers = {**answered_headers(opened), **quota_headers}
        return ResponseStream(_native_frames(opened.events, turn), headers)
    result, quota_headers = await calls.openai_responses(caller, spec=spec, body=sent)
    headers = {**answered_headers(result), **quota_headers}
    if not await _store(result.body, turn) and turn.store:
        headers["X-LLMAPI-Stored"] = "false"
    return ResponseAnswer(result.body, headers)


async def _native_frames(events, turn: _Turn) -> AsyncIterator[bytes]:
    """The server's events as it sent them; its final response is stored."""
    final: dict[str, Any] | None = None
    sequence = -1
    try:
        async for item in events:
            if not isinstance(item, calls.RawChunk):
                continue
            event = item.chunk
            if isinstance(event.get("sequence_number"), int):
                sequence = event["sequence_number"]
            if event.get("type") in RESPONSES_FINAL_EVENTS and isinstance(
                event.get("response"), dict
            ):
                final = event["response"]
            if isinstance(event.get("type"), str):
                yield sse(event)
            else:
                yield b"data: " + orjson.dumps(event) + b"\n\n"
    except (Exception, asyncio.CancelledError) as exc:
        failure = stream_failure(exc)
        if failure is None:
            raise
        detail, _status = failure
        error = {"code": "server_error", "message": detail, "param": None}
        yield sse({"type": "error", "sequence_number": sequence + 1, **error})
    finally:
        await events.aclose()
        if final is not None:
            await _store(final, turn)


# --- retrieve, input items, delete -------------------------------------------------------------


async def retrieve_response(principal, response_id: str) -> dict[str, Any]:
    row = await selectors.aget_response(response_id, principal)
    if row is None:
        raise ResponseNotFound(response_id)
    return row.response


async def list_input_items(
    principal, response_id: str, *, limit: int, order: str, after: str | None
) -> dict[str, Any]:
    """The input items of a response (this request's, not its conversation's), paginated."""
    row = await selectors.aget_response(response_id, principal)
    if row is None:
        raise ResponseNotFound(response_id)
    items = list(row.input_items)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


async def delete_response(principal, response_id: str) -> dict[str, Any]:
    deleted = await _delete(response_id, principal)
    if not deleted:
        raise ResponseNotFound(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@in_database_thread
def _delete(response_id: str, principal) -> bool:
    count, _ = selectors.visible_to(principal).filter(pk=response_id).delete()
    return count > 0


__all__ = [
    "ResponseAnswer",
    "ResponseStream",
    "create_response",
    "delete_response",
    "list_input_items",
    "retrieve_response",
]
