"""
What a request costs its key: the model allow-list, the quotas and the usage ledger, in one
place around the service call of every endpoint (seed whole and streamed, image, /v1).

    answer, headers = await accounted(request, spec=spec, messages=messages, params=params,
                                      endpoint="...", call=lambda: services.chat_completion(...))

Before the call the key's quota is reserved (`QuotaExceeded` -> 429 with Retry-After and the
x-ratelimit-* headers). A whole answer settles the reservation with its real token count and
writes one ledger row when it returns; a stream settles and writes its row when its events
end, however they end (finished, failed mid-way, or the client went away). A failure before
the answer settles at once (nothing used but the reservation's estimate, kept when unknown)
and is written to the ledger with its status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar, cast

from accounts.authentication import check_model_allowed
from api.exceptions import status_of
from inference import services
from inference.catalog import ModelSpec
from inference.exceptions import InferenceError, ModelNotFound, quote
from limits import admission
from limits.exceptions import LimitsUnavailable
from limits.quotas import QuotaExceeded, Reservation, estimate_request_tokens, get_quota_store
from server.middleware import request_id_var
from usage import ledger

Answer = TypeVar("Answer", services.ChatResult, services.ChatStream)


def may_use(principal: Any, spec: ModelSpec) -> bool:
    """Whether the caller's key may use this model (by its name or any alias)."""
    allowed = getattr(principal, "may_use", None)
    return allowed is None or allowed(spec.name, *spec.aliases)


def check_model(request, spec: ModelSpec, *, hide: bool = False) -> None:
    """
    Refuse a model outside the key's scope: 403 on the seed API, or (`hide`, on /v1) the same
    404 as a model that does not exist, since for that key it does not.
    """
    if hide:
        if not may_use(request.user, spec):
            raise ModelNotFound(
                f"The model '{quote(spec.name, 100)}' does not exist; GET /v1/models lists them."
            )
        return
    check_model_allowed(request.user, spec.name, *spec.aliases)


def _status(exc: BaseException) -> int:
    if isinstance(exc, InferenceError):
        return status_of(exc)
    if isinstance(exc, QuotaExceeded):
        return 429
    if isinstance(exc, LimitsUnavailable):
        return 503
    return int(getattr(exc, "status_code", 500))


def _prompt_chars(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += len(part["text"])
    return total


class _Account:
    """One request's reservation and ledger row."""

    def __init__(self, request, *, endpoint: str, spec: ModelSpec) -> None:
        self.principal = request.user
        self.endpoint = endpoint
        self.model = spec.name
        self.started = time.monotonic()
        self.request_id = request_id_var.get()
        self.reservation: Reservation | None = None
        self._pending: asyncio.Future[Reservation] | None = None

    async def reserve(self, spec: ModelSpec, messages: list[dict[str, Any]], params: dict) -> None:
        """
        Reserve the quota: at once in-process; with shared limits, one made ahead for a busy
        key (`limits.redis_ahead`), or started here and sent with the model slot's
        acquisition (`limits.admission`), and known after `reserved`.
        """
        max_tokens = params.get("max_tokens") or spec.defaults.get("max_tokens") or 0
        tokens = estimate_request_tokens(
            max_tokens=int(max_tokens), prompt_chars=_prompt_chars(messages), messages=len(messages)
        )
        store, subject = get_quota_store(), self.principal.quota
        if store.shared and not subject.unlimited:
            self.reservation = store.take_ready(subject, tokens=tokens)
            if self.reservation is None:
                self._pending = admission.start(store.reserve(subject, tokens=tokens))
        else:
            self.reservation = await store.reserve(subject, tokens=tokens)

    async def reserved(self) -> None:
        """Wait for a reservation started by `reserve`: raises a refusal (429) or an outage."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.reservation = await admission.result(pending)

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
                principal=self.principal,
                model=model or self.model,
                replica=replica,
                endpoint=self.endpoint,
                status=status,
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
                latency_ms=(time.monotonic() - self.started) * 1000,
                ttft_ms=None if ttft is None else (ttft - self.started) * 1000,
                request_id=self.request_id,
            )


class _WatchedEvents:
    """
    A stream's events, passed through; when they end (finished, failed, or closed early
    because the client went away) the reservation is settled and the ledger row written,
    exactly once. A class rather than a generator so that closing it settles even when it
    was never iterated.
    """

    def __init__(self, account: _Account, stream: services.ChatStream) -> None:
        self._account = account
        self._stream = stream
        self._events = stream.events
        self._usage: dict[str, int] | None = None
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
            await self._end(_status(exc) if isinstance(exc, Exception) else 499)
            raise
        if isinstance(event, services.TextDelta | services.RawChunk):
            if self._first is None and (not isinstance(event, services.TextDelta) or event.text):
                self._first = time.monotonic()
        elif isinstance(event, services.StreamEnd):
            self._usage = event.usage
        return event

    async def aclose(self) -> None:
        await self._end(499)  # a no-op when the events already ended

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
                usage=self._usage,
                ttft=self._first,
            )


async def accounted(
    request,
    *,
    endpoint: str,
    spec: ModelSpec,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    call: Callable[[], Awaitable[Answer]],
    hide_models: bool = False,
) -> tuple[Answer, dict[str, str]]:
    """
    Check the model against the key's scope, reserve its quota, run `call` and account for
    its answer (see the module docstring). Returns the answer (a stream's events wrapped)
    and the x-ratelimit-* headers for the response.
    """
    check_model(request, spec, hide=hide_models)
    account = _Account(request, endpoint=endpoint, spec=spec)
    try:
        await account.reserve(spec, messages, params)
        try:
            answer = await call()
        finally:
            await account.reserved()  # a refused quota is the answer, whatever the call did
    except BaseException as exc:
        await account.close(status=_status(exc) if isinstance(exc, Exception) else 499)
        raise
    if isinstance(answer, services.ChatStream):
        stream: services.ChatStream = answer
        events = cast(AsyncGenerator[services.StreamEvent, None], _WatchedEvents(account, stream))
        watched = replace(stream, events=events)
        return cast(Answer, watched), account.headers
    await account.close(
        status=200, model=answer.answered_by, replica=answer.replica, usage=answer.usage
    )
    return answer, account.headers
