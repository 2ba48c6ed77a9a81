from __future__ import annotations

import httpx
import pytest

from observability import exposition, metrics
from observability.multiprocess import prepare_multiprocess_dir, remove_multiprocess_dir
from tests.fake_upstream import _free_port
from tests.observability.test_multiprocess import REQUESTS, run_worker


def test_this_process_is_scraped_in_the_prometheus_text_format(model):
    metrics.record_request(model=model, endpoint="text-stream", status=200, duration=0.1)
    body, content_type = exposition.render_metrics(None)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    assert "# TYPE gen_ai_server_time_to_first_token_seconds histogram" in text
    assert (
        f'llmapi_requests_total{{endpoint="text-stream",key="",model="{model}",'
        'status_class="2xx",team="none"} 1.0'
    ) in text
    assert "_created" not in text


def test_openmetrics_when_the_scraper_asks_for_it(recording):
    body, content_type = exposition.render_metrics(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    )
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")


@pytest.fixture
def metrics_dir(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    path = prepare_multiprocess_dir()
    yield path
    remove_multiprocess_dir(path)


def test_a_scrape_of_a_multiprocess_directory_drops_dead_workers_live_gauges(metrics_dir):
    run_worker(metrics_dir, "--requests", "2", "--die-in-flight")
    registry = exposition.multiprocess_registry(str(metrics_dir))
    assert registry.get_sample_value("llmapi_requests_total", REQUESTS) == 2
    # The worker is gone, so its in-flight request is no longer counted.
    assert registry.get_sample_value("llmapi_in_flight_requests", {"model": "mp-model"}) is None


def test_a_port_of_its_own_serves_every_workers_metrics(metrics_dir):
    run_worker(metrics_dir, "--requests", "3")
    run_worker(metrics_dir, "--requests", "2")
    port = _free_port()
    server, thread = exposition.start_metrics_server(
        "127.0.0.1", port, multiprocess_dir=metrics_dir
    )
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert response.status_code == 200
    assert (
        'llmapi_requests_total{endpoint="text-completion",key="",model="mp-model",'
        'status_class="2xx",team="none"} 5.0'
    ) in response.text
