from __future__ import annotations

import pytest

from infra.runtime import get_runtime
from observability import metrics
from tests.observability.conftest import sample

GENAI = {"gen_ai_operation_name": "chat", "endpoint": "text-completion"}


def request(model: str, **overrides) -> None:
    fields = {
        "model": model,
        "endpoint": "text-completion",
        "status": 200,
        "duration": 1.0,
        "team": "research",
        "ttft": 0.2,
        "upstream_seconds": 0.9,
        "queue_seconds": 0.05,
        "prompt_tokens": 30,
        "completion_tokens": 17,
    }
    fields.update(overrides)
    metrics.record_request(**fields)


def test_requests_are_counted_by_model_endpoint_status_class_and_team(model):
    request(model)
    request(model)
    request(model, status=503)
    request(model, status=429, team=None)
    labels = {"model": model, "endpoint": "text-completion", "key": ""}
    assert sample("llmapi_requests_total", **labels, status_class="2xx", team="research") == 2
    assert sample("llmapi_requests_total", **labels, status_class="5xx", team="research") == 1
    assert sample("llmapi_requests_total", **labels, status_class="4xx", team="none") == 1


def test_a_model_outside_the_catalog_is_labelled_unknown(recording):
    before = sample(
        "llmapi_requests_total",
        model="unknown",
        endpoint="text-completion",
        status_class="2xx",
        team="research",
        key="",
    )
    request("'; DROP TABLE models; --")
    assert (
        sample(
            "llmapi_requests_total",
            model="unknown",
            endpoint="text-completion",
            status_class="2xx",
            team="research",
            key="",
        )
        == before + 1
    )
    labels = [
        sample.labels.get("model")
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
    ]
    assert "'; DROP TABLE models; --" not in labels


def test_latency_ttft_and_time_per_output_token(model):
    request(model, duration=1.0, ttft=0.2, completion_tokens=17)
    genai = {**GENAI, "gen_ai_request_model": model}
    assert sample("gen_ai_server_request_duration_seconds_count", **genai) == 1
    assert sample("gen_ai_server_request_duration_seconds_sum", **genai) == pytest.approx(1.0)
    assert sample("gen_ai_server_time_to_first_token_seconds_sum", **genai) == pytest.approx(0.2)
    # (1.0 - 0.2) seconds for the 16 tokens after the first.
    assert sample("gen_ai_server_time_per_output_token_seconds_sum", **genai) == pytest.approx(0.05)
    assert sample("gen_ai_server_time_to_first_token_seconds_bucket", **genai, le="0.25") == 1
    assert sample("gen_ai_server_time_to_first_token_seconds_bucket", **genai, le="0.1") == 0


def test_failed_requests_record_no_time_to_first_token(model):
    request(model, status=502)
    genai = {**GENAI, "gen_ai_request_model": model}
    assert sample("gen_ai_server_request_duration_seconds_count", **genai) == 1
    assert sample("gen_ai_server_time_to_first_token_seconds_count", **genai) == 0
    assert sample("gen_ai_server_time_per_output_token_seconds_count", **genai) == 0


def test_gateway_overhead_is_latency_minus_upstream_and_queue(model):
    request(model, duration=1.0, upstream_seconds=0.9, queue_seconds=0.05)
    request(model, duration=0.5, upstream_seconds=None)  # no upstream: no overhead to tell
    labels = {"model": model, "endpoint": "text-completion"}
    assert sample("llmapi_gateway_overhead_seconds_count", **labels) == 1
    assert sample("llmapi_gateway_overhead_seconds_sum", **labels) == pytest.approx(0.05)
    assert sample("llmapi_gateway_overhead_seconds_bucket", **labels, le="0.05") == 1
    assert sample("llmapi_gateway_overhead_seconds_bucket", **labels, le="0.025") == 0


def test_token_usage_by_token_type(model):
    request(model, prompt_tokens=30, completion_tokens=17)
    request(model, prompt_tokens=70, completion_tokens=3, team="ops")
    usage = {"gen_ai_operation_name": "chat", "gen_ai_request_model": model}
    assert sample("gen_ai_client_token_usage_sum", **usage, gen_ai_token_type="input") == 100
    assert sample("gen_ai_client_token_usage_sum", **usage, gen_ai_token_type="output") == 20
    assert sample("gen_ai_client_token_usage_count", **usage, gen_ai_token_type="output") == 2


def test_key_ids_are_labels_only_when_opted_in(model):
    labels = {
        "model": model,
        "endpoint": "text-completion",
        "status_class": "2xx",
        "team": "research",
    }
    request(model, key_id="key-7")
    assert sample("llmapi_requests_total", **labels, key="") == 1
    metrics.configure(key_labels=True)
    request(model, key_id="key-7")
    assert sample("llmapi_requests_total", **labels, key="key-7") == 1


def test_in_flight_counts_while_the_block_runs_even_when_it_fails(model):
    with metrics.in_flight(model):
        with metrics.in_flight(model):
            assert sample("llmapi_in_flight_requests", model=model) == 2
    assert sample("llmapi_in_flight_requests", model=model) == 0
    with pytest.raises(RuntimeError), metrics.in_flight(model):
        raise RuntimeError("upstream went away")
    assert sample("llmapi_in_flight_requests", model=model) == 0


def test_queue_wait(model):
    metrics.record_queue_wait(model, 0.3)
    metrics.record_queue_wait(model, 2.0)
    labels = {"model": model, "team": "none", "priority": "interactive"}
    assert sample("llmapi_queue_wait_seconds_count", **labels) == 2
    assert sample("llmapi_queue_wait_seconds_sum", **labels) == pytest.approx(2.3)
    assert sample("llmapi_queue_wait_seconds_bucket", **labels, le="0.5") == 1


def test_queue_wait_and_length_by_team_and_priority(model):
    metrics.record_queue_wait(model, 0.5, team="team-a", priority="batch")
    assert (
        sample("llmapi_queue_wait_seconds_count", model=model, team="team-a", priority="batch") == 1
    )
    labels = {"model": model, "team": "team-b", "priority": "interactive"}
    with metrics.queued(model, "team-b", "interactive"):
        assert sample("llmapi_queue_length", **labels) == 1
    assert sample("llmapi_queue_length", **labels) == 0


def test_queue_priority_label_is_bounded(model):
    with metrics.queued(model, "team-a", "urgent!"):
        assert sample("llmapi_queue_length", model=model, team="team-a", priority="other") == 1


def test_rate_limited_by_cause(model):
    metrics.record_rate_limited("model_slots", model)
    metrics.record_rate_limited("team_quota", model, "research")
    metrics.record_rate_limited("team_quota", model, "research")
    metrics.record_rate_limited("made up", model, "research")
    labels = {"model": model, "key": ""}
    assert sample("llmapi_rate_limited_total", **labels, cause="model_slots", team="none") == 1
    assert sample("llmapi_rate_limited_total", **labels, cause="team_quota", team="research") == 2
    assert sample("llmapi_rate_limited_total", **labels, cause="other", team="research") == 1


def test_upstream_errors_retries_and_ejections_per_replica(model):
    url = "https://user:upstream-secret@gpu-1.internal:8443/v1?api_key=abc"
    metrics.record_upstream_error(model, url, "timeout")
    metrics.record_upstream_error(model, "http://gpu-2.internal/v1", "connect")
    metrics.record_retry(model, url)
    metrics.record_ejection(model, url)
    replica = "https://gpu-1.internal:8443"
    assert sample("llmapi_upstream_errors_total", model=model, replica=replica, kind="timeout") == 1
    assert (
        sample(
            "llmapi_upstream_errors_total",
            model=model,
            replica="http://gpu-2.internal:80",
            kind="connect",
        )
        == 1
    )
    assert sample("llmapi_upstream_retries_total", model=model, replica=replica) == 1
    assert sample("llmapi_replica_ejections_total", model=model, replica=replica) == 1


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("https://api.example.com/v1/", "https://api.example.com:443"),
        ("HTTP://Host.Example:81", "http://host.example:81"),
        ("http://[::1]:9000/v1", "http://[::1]:9000"),
        ("http://host:notaport/v1", "unknown"),
        ("", "unknown"),
    ],
)
def test_replica_label_is_scheme_host_and_port_only(url, label):
    assert metrics.replica_label(url) == label


def test_structured_output_outcomes(model):
    for outcome in ("valid", "valid", "repaired", "failed", "weird"):
        metrics.record_structured_output(model, outcome)
    assert sample("llmapi_structured_output_total", model=model, outcome="valid") == 2
    assert sample("llmapi_structured_output_total", model=model, outcome="repaired") == 1
    assert sample("llmapi_structured_output_total", model=model, outcome="failed") == 1
    assert sample("llmapi_structured_output_total", model=model, outcome="other") == 1


def test_usage_ledger_depth_and_drops(recording):
    drops = sample("llmapi_usage_ledger_dropped_total")
    metrics.set_ledger_queue_depth(12)
    assert sample("llmapi_usage_ledger_queue_depth") == 12
    metrics.set_ledger_queue_depth(0)
    assert sample("llmapi_usage_ledger_queue_depth") == 0
    metrics.record_ledger_drop(3)
    metrics.record_ledger_drop()
    assert sample("llmapi_usage_ledger_dropped_total") == drops + 4


def test_embedded_tokens_per_second_keeps_the_latest(model):
    metrics.record_embedded_tokens_per_second(model, 95.0)
    metrics.record_embedded_tokens_per_second(model, 104.5)
    assert sample("llmapi_embedded_model_tokens_per_second", model=model) == 104.5


def test_nothing_is_recorded_when_recording_is_off(model):
    metrics.configure(enabled=False)
    request(model)
    metrics.record_queue_wait(model, 1.0)
    with metrics.in_flight(model):
        assert sample("llmapi_in_flight_requests", model=model) == 0
    labels = {"model": model, "team": "none", "priority": "interactive"}
    assert sample("llmapi_queue_wait_seconds_count", **labels) == 0
    assert (
        sample(
            "llmapi_requests_total",
            model=model,
            endpoint="text-completion",
            status_class="2xx",
            team="research",
            key="",
        )
        == 0
    )


@pytest.mark.parametrize(
    ("status", "klass"),
    [(200, "2xx"), (204, "2xx"), (404, "4xx"), (429, "4xx"), (504, "5xx"), (999, "other")],
)
def test_status_class(status, klass):
    assert metrics.status_class(status) == klass


def test_label_values_beyond_the_limit_become_other():
    bounded = metrics._BoundedValues(2)
    assert [bounded(v) for v in ("a", "b", "c", "a", "d")] == ["a", "b", "other", "a", "other"]


OFF = {"token": "", "port": 0, "host": "127.0.0.1", "key_labels": False}


@pytest.mark.parametrize(
    ("options", "enabled"),
    [({}, False), ({"token": "t0k3n-long-enough"}, True), ({"port": 9464}, True)],
)
def test_recording_is_on_only_when_someone_can_read_the_metrics(settings, options, enabled):
    settings.METRICS = {**OFF, **options}
    assert get_runtime().part(metrics.MetricsState).enabled is enabled


def test_key_labels_follow_the_setting(settings):
    settings.METRICS = {**OFF, "token": "t0k3n-long-enough", "key_labels": True}
    assert get_runtime().part(metrics.MetricsState).key_labels is True


def test_the_configured_model_names_are_catalog_labels(settings):
    settings.LLMAPI_MODELS = {"text": {"model_name": "Qwen/Qwen2.5-7B-Instruct"}}
    settings.METRICS = {**OFF, "token": "t0k3n-long-enough"}
    assert metrics.model_label("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
