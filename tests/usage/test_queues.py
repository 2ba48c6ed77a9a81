"""The line's figures on the usage dashboard, from this server's metrics (Redis: tests/limits)."""

from __future__ import annotations

import uuid
from http import HTTPStatus

import pytest

from observability import metrics
from usage.queues import QueueRow, quantile, queue_figures

pytestmark = [pytest.mark.urls("tests.teams_urls"), pytest.mark.django_db]


@pytest.fixture
def model():
    metrics.configure(enabled=True, key_labels=False)
    name = f"model-{uuid.uuid4().hex[:8]}"
    metrics.register_models([name])
    yield name
    metrics.configure(enabled=False, key_labels=False)


def rows_of(model: str) -> dict[tuple[str, str], QueueRow]:
    return {(r.team, r.priority): r for r in queue_figures().rows if r.model == model}


def test_quantile_interpolates_within_the_bucket_like_promql():
    buckets = [(0.1, 0.0), (1.0, 50.0), (10.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(1.0)
    assert quantile(0.95, buckets) == pytest.approx(1.0 + 9.0 * 45 / 50)
    assert quantile(0.95, [(1.0, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.99, [(1.0, 1.0), (float("inf"), 10.0)]) == 1.0  # beyond the last bound


def test_waiting_requests_and_waits_show_by_team_and_priority(model):
    metrics.record_queue_wait(model, 0.2, "research", "interactive")
    metrics.record_queue_wait(model, 0.4, "research", "interactive")
    with metrics.queued(model, "research", "batch"), metrics.queued(model, None, "interactive"):
        rows = rows_of(model)
    research = rows[("research", "interactive")]
    assert (research.waiting, research.waited) == (0, 2)
    assert research.mean_wait == pytest.approx(0.3)
    assert 0.25 < research.p95_wait <= 0.5  # within the bucket that holds it
    assert rows[("research", "batch")].waiting == 1
    assert rows[("none", "interactive")].waiting == 1
    assert all(r.waiting_everywhere is None for r in rows.values())  # no REDIS_URL
    assert ("research", "batch") not in rows_of(model)  # it left the line


def test_the_dashboard_renders_the_line(admin_client, model):
    with metrics.queued(model, "research", "interactive"):
        metrics.record_queue_wait(model, 1.5, "research", "interactive")
        response = admin_client.get("/admin/usage/usagehourly/")
    assert response.status_code == HTTPStatus.OK
    page = response.content.decode()
    row = page.split(f'<tr data-model="{model}" data-team="research"', 1)[1].split("</tr>")[0]
    assert '<td class="waiting">1</td>' in row and '<td class="waited">1</td>' in row
    assert "1.50 s" in row
    assert "every host" not in page  # no REDIS_URL: no shared column
    assert "<script" not in page.split('id="queues"', 1)[1]


def test_the_dashboard_says_when_this_server_records_no_metrics(admin_client):
    page = admin_client.get("/admin/usage/usagehourly/").content.decode()
    assert "This server records no metrics" in page and "METRICS__TOKEN" in page
