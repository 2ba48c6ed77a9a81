from __future__ import annotations

import logging

import pytest
from django.test import AsyncClient, override_settings

from observability import timing
from tests.observability.conftest import sample
from tests.waiting import FakeClock

MIDDLEWARE = [
    "server.middleware.RequestIdMiddleware",
    "observability.middleware.ObservabilityMiddleware",
]


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """The request timing's clock, moved only by the test views (tests.observability.urls)."""
    fake = FakeClock()
    monkeypatch.setattr(timing, "time", fake)
    return fake


@pytest.fixture
def client():
    with override_settings(ROOT_URLCONF="tests.observability.urls", MIDDLEWARE=MIDDLEWARE):
        yield AsyncClient()


def requests_total(model: str, endpoint: str, status_class: str, team: str) -> float:
    return sample(
        "llmapi_requests_total",
        model=model,
        endpoint=endpoint,
        status_class=status_class,
        team=team,
        key="",
    )


@pytest.mark.fake_clock
async def test_a_request_is_timed_recorded_and_summarised(client, clock, model, caplog):
    caplog.set_level(logging.INFO, logger="llmapi.requests")
    response = await client.get("/answer", {"model": model}, headers={"X-Request-ID": "r-1"})
    assert response.status_code == 200
    assert response["Server-Timing"] == "queue;dur=10.0, upstream_ttfb;dur=20.0, total;dur=35.0"
    assert float(response["x-llmapi-queue-ms"]) == 10
    assert float(response["x-llmapi-upstream-ttfb-ms"]) == 20
    assert requests_total(model, "text-completion", "2xx", "research") == 1
    genai = {"gen_ai_operation_name": "chat", "gen_ai_request_model": model}
    assert (
        sample(
            "gen_ai_server_time_to_first_token_seconds_count", **genai, endpoint="text-completion"
        )
        == 1
    )
    assert sample("gen_ai_client_token_usage_sum", **genai, gen_ai_token_type="input") == 11
    overhead = sample(
        "llmapi_gateway_overhead_seconds_sum", model=model, endpoint="text-completion"
    )
    # 35 ms in all, less 20 ms with the model server and 10 ms in the queue.
    assert overhead == pytest.approx(0.005)
    (record,) = [r for r in caplog.records if r.name == "llmapi.requests"]
    assert record.getMessage().startswith("GET text-completion 200 in ")
    assert record.model == model and record.completion_tokens == 5


async def test_an_error_status_is_counted_in_its_class(client, model):
    response = await client.get("/answer", {"model": model, "status": 502})
    assert response.status_code == 502
    assert requests_total(model, "text-completion", "5xx", "research") == 1


@pytest.mark.fake_clock
async def test_a_stream_is_recorded_when_its_last_byte_is_out(client, clock, model):
    response = await client.get("/stream", {"model": model})
    assert "total;dur=" in response["Server-Timing"]
    assert requests_total(model, "text-stream", "2xx", "none") == 0
    body = b"".join([chunk async for chunk in response.streaming_content])
    assert body.count(b"data:") == 3
    assert requests_total(model, "text-stream", "2xx", "none") == 1
    usage = {"gen_ai_operation_name": "chat", "gen_ai_request_model": model}
    assert sample("gen_ai_client_token_usage_sum", **usage, gen_ai_token_type="output") == 3
    ttft = sample("gen_ai_server_time_to_first_token_seconds_sum", **usage, endpoint="text-stream")
    duration = sample("gen_ai_server_request_duration_seconds_sum", **usage, endpoint="text-stream")
    assert ttft == pytest.approx(0.01)  # the first of three chunks, 10 ms apart
    assert duration == pytest.approx(0.03)


async def test_probes_get_headers_but_are_not_recorded(client, recording, caplog):
    caplog.set_level(logging.INFO, logger="llmapi.requests")
    response = await client.get("/healthz")
    assert "Server-Timing" in response
    assert requests_total("unknown", "healthz", "2xx", "none") == 0
    assert not [r for r in caplog.records if r.name == "llmapi.requests"]


async def test_timing_headers_can_be_turned_off(model):
    with override_settings(
        ROOT_URLCONF="tests.observability.urls",
        MIDDLEWARE=MIDDLEWARE,
        OBSERVABILITY_TIMING_HEADERS=False,
    ):
        response = await AsyncClient().get("/answer", {"model": model})
    assert "Server-Timing" not in response
    assert "x-llmapi-total-ms" not in response
    assert requests_total(model, "text-completion", "2xx", "research") == 1


def test_quota_refusals_are_counted_by_scope(model):
    from limits.quotas import QuotaExceeded
    from observability import timing
    from observability.middleware import record_quota_refusal

    request_timing = timing.start()
    request_timing.fields.update(model=model, team="research")

    def refused(cause: str) -> float:
        labels = {"cause": cause, "model": model, "team": "research", "key": ""}
        return sample("llmapi_rate_limited_total", **labels)

    record_quota_refusal(
        QuotaExceeded(
            "Rate limit reached: the team's limit of 5 requests per minute.",
            retry_after=1,
            headers={},
        )
    )
    record_quota_refusal(
        QuotaExceeded(
            "Rate limit reached: the API key's limit of 5 requests per minute.",
            retry_after=1,
            headers={},
        )
    )
    scoped = QuotaExceeded("Over the limit.", retry_after=1, headers={})
    scoped.scope = "team"  # type: ignore[attr-defined]
    record_quota_refusal(scoped)
    assert refused("team_quota") == 2
    assert refused("key_quota") == 1
