"""The probes in-process: what /healthz and /readyz answer for each state of models and Redis."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.test import AsyncClient

from health import apis

READY_MODEL = {"name": "fake-llm", "backend": "server", "ready": True, "in_flight": 0}


@pytest.fixture
def client():
    return AsyncClient()


def readiness_of(monkeypatch, *, models_ready: bool, redis: str, mode: str) -> None:
    async def readiness() -> dict:
        return {"ready": models_ready, "models": {"text": {**READY_MODEL, "ready": models_ready}}}

    async def redis_status() -> dict:
        return {"redis": redis, "mode": mode}

    monkeypatch.setattr(apis.services, "readiness", readiness)
    monkeypatch.setattr(apis.redis_client, "redis_status", redis_status)


async def test_healthz_answers_without_a_key_and_calls_no_model(client, monkeypatch):
    async def no_model_call() -> dict:
        raise AssertionError("liveness must not look at the models")

    monkeypatch.setattr(apis.services, "readiness", no_model_call)
    response = await client.get("/healthz")
    assert response.status_code == HTTPStatus.OK
    assert response.json() == {"status": "ok"}
    assert response["Content-Type"] == "application/json"


async def test_readyz_is_200_with_the_report_when_every_model_can_answer(client, monkeypatch):
    readiness_of(monkeypatch, models_ready=True, redis="off", mode="open")
    response = await client.get("/readyz")
    assert response.status_code == HTTPStatus.OK
    report = response.json()
    assert report["ready"] is True
    assert report["models"]["text"]["ready"] is True
    assert report["limits"] == {"redis": "off", "mode": "open"}


async def test_readyz_is_503_when_a_model_cannot_answer(client, monkeypatch):
    readiness_of(monkeypatch, models_ready=False, redis="ok", mode="closed")
    response = await client.get("/readyz")
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert response.json()["ready"] is False


@pytest.mark.parametrize(
    ("mode", "status"),
    [("closed", HTTPStatus.SERVICE_UNAVAILABLE), ("open", HTTPStatus.OK)],
)
async def test_redis_down_makes_readyz_fail_only_when_requests_would_be_refused(
    client, monkeypatch, mode, status
):
    readiness_of(monkeypatch, models_ready=True, redis="down", mode=mode)
    response = await client.get("/readyz")
    assert response.status_code == status
    assert response.json()["ready"] is (status == HTTPStatus.OK)
    assert response.json()["limits"] == {"redis": "down", "mode": mode}


async def test_probes_refuse_writes(client):
    for path in ("/healthz", "/readyz"):
        response = await client.post(path)
        assert response.status_code == HTTPStatus.METHOD_NOT_ALLOWED, path
