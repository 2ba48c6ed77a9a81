"""Quotas and the ledger around a service call: whole answers, streams, refusals."""

from __future__ import annotations

import types
from dataclasses import replace

import pytest

from accounts.principals import Principal
from gateway import calls
from inference import services
from inference.exceptions import ModelNotFound, UpstreamTimeout
from limits import quotas, stores
from limits.quotas import Limits, QuotaExceeded, QuotaSubject
from tests.models import text_spec
from tests.waiting import FakeClock
from usage import ledger


@pytest.fixture(autouse=True)
def fresh_store_and_ledger(runtime, monkeypatch):
    # The quota clock stands still: the requests of a test count in one minute.
    monkeypatch.setattr(quotas, "time", FakeClock())
    runtime.replace(stores.QuotaStoreState, stores.QuotaStoreState(quotas.InProcessQuotaStore()))
    writer = ledger.LedgerWriter(
        max_queue=100, batch_size=100, flush_interval=60, rollup_interval=600
    )
    runtime.replace(ledger.LedgerState, ledger.LedgerState(writer))
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


# --- The attacks on the accounting, each a test ---------------------------------------------


def _scoped(allowed: frozenset[str], limits: Limits = Limits()) -> calls.Caller:  # noqa: B008
    return caller_of(request_from(limits, allowed=allowed), "v1/chat/completions")


def _failing_primary_and_fallback(monkeypatch):
    """Model alpha (failing) falls back to beta; returns which models were asked."""
    from types import SimpleNamespace

    from inference.exceptions import UpstreamUnavailable

    alpha, beta = text_spec(name="alpha", fallbacks=("beta",)), text_spec(name="beta")
    asked: list[str] = []

    class Backend:
        def __init__(self, name: str) -> None:
            self.name = name

        async def create(self, payload: dict) -> dict:
            asked.append(self.name)
            if self.name == "alpha":
                raise UpstreamUnavailable("down")
            message = {"role": "assistant", "content": "from beta"}
            return {"model": "m", "choices": [{"message": message, "finish_reason": "stop"}]}

    backends = {alpha: Backend("alpha"), beta: Backend("beta")}
    catalog = SimpleNamespace(fallbacks_of=lambda spec: [beta] if spec is alpha else [])
    monkeypatch.setattr(services, "get_registry", lambda: SimpleNamespace(catalog=catalog))
    monkeypatch.setattr(services, "concurrency_slot", _no_slot)
    monkeypatch.setattr(services, "get_backend", lambda spec: backends[spec])
    return alpha, asked


def _no_slot(spec, context):
    import contextlib

    @contextlib.asynccontextmanager
    async def held():
        if context.admitted is not None:
            await context.admitted()
        yield

    return held()


async def test_fallbacks_outside_the_keys_scope_are_never_tried(monkeypatch):
    alpha, asked = _failing_primary_and_fallback(monkeypatch)
    from inference.exceptions import UpstreamUnavailable

    with pytest.raises(UpstreamUnavailable):
        await calls.openai_chat(
            _scoped(frozenset({"alpha"})), spec=alpha, body={"messages": [QUESTION]}
        )
    assert asked == ["alpha"]


async def test_fallbacks_inside_the_keys_scope_still_answer(monkeypatch, fresh_store_and_ledger):
    alpha, asked = _failing_primary_and_fallback(monkeypatch)
    answer, _ = await calls.openai_chat(
        _scoped(frozenset({"alpha", "beta"})), spec=alpha, body={"messages": [QUESTION]}
    )
    assert (answer.answered_by, asked) == ("beta", ["alpha", "beta"])
    [row] = rows(fresh_store_and_ledger)
    assert row["model"] == "beta"


QUESTION = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "reserved"),
    [
        ({}, 100),  # none asked: the model's output limit
        ({"max_tokens": 10}, 10),
        ({"max_completion_tokens": 1_000_000}, 100),  # capped by the output limit
        ({"max_tokens": 10, "max_completion_tokens": 30}, 30),
        ({"max_tokens": 20, "n": 50}, 1000),
        ({"n": 3}, 300),
    ],
)
def test_reservations_cover_what_a_request_can_really_use(body, reserved):
    spec = text_spec(defaults={**text_spec().defaults, "max_tokens": 100})
    capped, completion = calls.capped_body(spec, {"messages": [QUESTION], **body})
    assert completion == reserved
    for name in ("max_tokens", "max_completion_tokens"):
        assert capped.get(name, 0) <= 100  # never more than the limit reaches the server


@pytest.mark.parametrize("value", ["abc", [1], {}, "NaN", "1e999", True, 1.5, 0, -3, 1e999])
@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens", "n"])
def test_a_bad_token_count_is_a_400_naming_the_field(name, value):
    from gateway.statuses import status_of
    from inference.exceptions import InvalidParameter

    with pytest.raises(InvalidParameter) as caught:
        calls.capped_body(text_spec(), {"messages": [QUESTION], name: value})
    assert caught.value.param == name and status_of(caught.value) == 400


async def test_a_request_that_alone_would_overrun_the_daily_budget_is_refused(
    monkeypatch, fresh_store_and_ledger
):
    alpha, asked = _failing_primary_and_fallback(monkeypatch)
    spec = text_spec(name="beta", defaults={**text_spec().defaults, "max_tokens": 100})
    caller = _scoped(frozenset(), Limits(tokens_per_day=1000))
    with pytest.raises(QuotaExceeded) as refused:
        await calls.openai_chat(caller, spec=spec, body={"messages": [QUESTION], "n": 50})
    assert "tokens per day" in refused.value.detail
    assert asked == []  # the model was never called


async def test_an_aborted_stream_records_what_was_relayed(fresh_store_and_ledger):
    spec, request = text_spec(), request_from(Limits(requests_per_minute=5))

    async def events():
        yield services.RawChunk({"choices": [{"index": 0, "delta": {"content": "x" * 40}}]})
        yield services.RawChunk({"choices": [{"index": 0, "delta": {"content": "y" * 40}}]})

    async def call(context):
        return services.ChatStream(events(), answered_by=spec.name)

    stream, _ = await calls.accounted(
        caller_of(request, "s"), spec=spec, tokens=10, prompt_tokens=7, call=call
    )
    await anext(stream.events)
    await anext(stream.events)
    await stream.events.aclose()  # the client went away before the usage chunk
    [row] = rows(fresh_store_and_ledger)
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == (499, 7, 20)


def test_the_priority_header_may_lower_but_never_raise():
    assert calls.lower_priority("interactive", "batch") == "batch"
    assert calls.lower_priority("batch", "interactive") == "batch"
    assert calls.lower_priority("interactive", "") == "interactive"


def test_the_seed_image_endpoint_refuses_a_model_without_vision(monkeypatch):
    from inference.exceptions import CapabilityMissing

    alpha = text_spec(name="alpha")  # chat and tools, no vision
    monkeypatch.setattr(services, "resolve_model", lambda name, **_: alpha)
    caller = caller_of(request_from(Limits()), "image_model/chat/completion")
    with pytest.raises(CapabilityMissing) as refused:
        calls.resolve_model(caller, "alpha", role="image", capability="vision")
    assert "does not accept images" in refused.value.detail
