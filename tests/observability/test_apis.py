from __future__ import annotations

from http import HTTPStatus

import httpx
import pytest
from django.test import AsyncClient, override_settings

TOKEN = "metrics-token-0123456789"
METRICS_ON = {"token": TOKEN, "port": 0, "host": "127.0.0.1", "key_labels": False}


@pytest.fixture
def client():
    return AsyncClient()


async def test_metrics_answer_404_unless_a_token_is_configured(client):
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == HTTPStatus.NOT_FOUND


@override_settings(METRICS=METRICS_ON)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"]
)
async def test_metrics_need_the_bearer_token(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert "llmapi_" not in response.content.decode()


@override_settings(METRICS=METRICS_ON)
async def test_metrics_with_the_token_in_the_prometheus_format(client, model):
    from observability import metrics

    metrics.record_queue_wait(model, 0.2)
    response = await client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == HTTPStatus.OK
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response["Cache-Control"] == "no-store"
    assert (
        f'llmapi_queue_wait_seconds_count{{model="{model}",priority="interactive",team="none"}} 1.0'
        in response.content.decode()
    )


@override_settings(METRICS=METRICS_ON)
async def test_metrics_accept_only_get(client):
    response = await client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == HTTPStatus.METHOD_NOT_ALLOWED


def test_the_served_gateway_exposes_metrics_with_its_token(gateways, upstream):
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
        METRICS__TOKEN=TOKEN,
    )
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        assert http.get("/metrics").status_code == HTTPStatus.UNAUTHORIZED
        response = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == HTTPStatus.OK
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE gen_ai_server_time_to_first_token_seconds histogram" in response.text
    assert TOKEN not in gateway.log()


def test_the_served_gateway_hides_metrics_without_a_token(gateway):
    with gateway.client() as http:
        assert http.get("/metrics").status_code == HTTPStatus.NOT_FOUND
