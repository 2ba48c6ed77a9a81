"""Quotas and the ledger around a service call: whole answers, streams, refusals."""

from __future__ import annotations

import types
from dataclasses import replace

import pytest

from accounts.principals import Principal
from gateway import calls
from inference import services
from inference.exceptions import ModelNotFound, UpstreamTimeout
from limits import quotas
from limits.quotas import Limits, QuotaExceeded, QuotaSubject
from tests.models import text_spec
from usage import ledger


@pytest.fixture(autouse=True)
def fresh_store_and_ledger(monkeypatch):
    monkeypatch.setattr(quotas, "_store", quotas.InProcessQuotaStore())
    writer = ledger.LedgerWriter(
        max_queue=100, batch_size=100, flush_interval=60, rollup_interval=600
    )
    monkeypatch.setattr(ledger, "_writer", writer)
    return writer


def request_from(limits: Limits, allowed: frozenset[str] = frozenset()):
    principal = Principal(
        kind="key",
        key_id=1,
        prefix="abcdefgh",
        name="ci",
        team_id=None,
        team_name="",
        allowed_models=allowed,
        expires_at=None,
        quota=QuotaSubject(key_id="1", key_limits=limits),
    )
    return types.SimpleNamespace(user=principal)


def caller_of(request, endpoint: str) -> calls.Caller:
    return calls.Caller(principal=request.user, endpoint=endpoint)


def rows(writer) -> list[dict]:
    return [dict(zip(ledger.FIELDS, row, strict=True)) for row in writer.queue]


def result(spec) -> services.ChatResult:
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    return services.ChatResult("hi", spec.name, "stop", usage, answered_by=spec.name, replica="r1")


async def test_whole_answer_settles_and_writes_one_row(fresh_store_and_ledger):
    spec, request = text_spec(), request_from(Limits(requests_per_minute=5))

    async def call(context):
        return result(spec)

    answer, headers = await calls.accounted(
        caller_of(request, "e"), spec=spec, tokens=10, prompt_tokens=2, call=call
    )
    assert answer.response == "hi"
    assert headers["x-ratelimit-remaining-requests"] == "4"
    [row] = rows(fresh_store_and_ledger)
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == (200, 3, 4)
    assert (row["replica"], row["key_prefix"]) == ("r1", "abcdefgh")


async def test_failure_frees_the_concurrency_unit_and_is_written_with_its_status(
    fresh_store_and_ledger,
):
    spec, request = text_spec(), request_from(Limits(concurrent_requests=1))

    async def call(context):
        raise UpstreamTimeout("slow")

    for _ in range(2):  # the second gets in: the first freed its unit
        with pytest.raises(UpstreamTimeout):
            await calls.accounted(
                caller_of(request, "e"), spec=spec, tokens=10, prompt_tokens=2, call=call
            )
    assert [row["status"] for row in rows(fresh_store_and_ledger)] == [504, 504]


async def test_quota_refusal_is_a_ledger_row_too(fresh_store_and_ledger):
    spec, request = text_spec(), request_from(Limits(requests_per_minute=1))

    async def call(context):
        return result(spec)

    await calls.accounted(caller_of(request, "e"), spec=spec, tokens=10, prompt_tokens=2, call=call)
    with pytest.raises(QuotaExceeded):
        await calls.accounted(
            caller_of(request, "e"), spec=spec, tokens=10, prompt_tokens=2, call=call
        )
    assert [row["status"] for row in rows(fresh_store_and_ledger)] == [200, 429]


async def test_abandoned_stream_settles_when_closed(fresh_store_and_ledger):
    spec, request = text_spec(), request_from(Limits(concurrent_requests=1))

    async def events():
        yield services.TextDelta("a")
        yield services.TextDelta("b")
        yield services.StreamEnd(model=spec.name, finish_reason="stop")

    async def call(context):
        return services.ChatStream(events(), answered_by=spec.name, replica="r2")

    stream, _ = await calls.accounted(
        caller_of(request, "s"), spec=spec, tokens=10, prompt_tokens=2, call=call
    )
    assert rows(fresh_store_and_ledger) == []  # not before the stream ends
    assert await anext(stream.events) == services.TextDelta("a")
    await stream.events.aclose()  # the client went away
    [row] = rows(fresh_store_and_ledger)
    assert (row["endpoint"], row["replica"], row["status"]) == ("s", "r2", 499)
    assert row["ttft_ms"] is not None
    # The concurrency unit is free again.
    await calls.accounted(caller_of(request, "s"), spec=spec, tokens=10, prompt_tokens=2, call=call)


async def test_model_outside_the_keys_scope(fresh_store_and_ledger):
    spec, request = text_spec(), request_from(Limits(), allowed=frozenset({"other"}))
    with pytest.raises(ModelNotFound):
        calls.check_scope(replace(caller_of(request, "v1/x"), hide_models=True), spec)
    from rest_framework.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        calls.check_scope(caller_of(request, "x"), spec)
    assert not calls.may_use(request.user, spec)


async def test_stream_closed_before_its_first_event_still_settles(fresh_store_and_ledger):
    spec, request = text_spec(), request_from(Limits(concurrent_requests=1))
    closed = []

    async def events():
        try:
            yield services.TextDelta("a")
        finally:
            closed.append(True)

    async def call(context):
        stream = events()
        await anext(stream)  # opened, as services.open_chat_stream leaves it
        return services.ChatStream(stream, answered_by=spec.name)

    stream, _ = await calls.accounted(
        caller_of(request, "s"), spec=spec, tokens=10, prompt_tokens=2, call=call
    )
    await stream.events.aclose()
    assert closed == [True]  # the model's stream (and its slot) is released
    assert [row["status"] for row in rows(fresh_store_and_ledger)] == [499]
    await stream.events.aclose()  # twice: nothing more
    assert len(rows(fresh_store_and_ledger)) == 1
