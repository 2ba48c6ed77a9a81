"""
/readyz with 10,000 models: a summary of a few hundred bytes, one probe round per period
however many callers, and the per-model details only for the metrics token, a key or staff.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import pytest
from django.test import AsyncClient

from health import readiness
from inference.backends.openai_http import OpenAICompatibleBackend
from inference.catalog import build_catalog
from inference.catalog.file import parse_catalog
from inference.registry import ModelRegistry, RegistryState, default_backend_factory
from tests.teams import key_pepper, make_key, team  # noqa: F401

MODELS = 10_000
API_KEY = "readyz-key-0123456789"


@pytest.fixture(scope="module")
def registry():
    """A registry of 10,000 models, built once (reading and checking them takes seconds)."""
    lines = ["default_text_model: m0", "models:"]
    lines += [f"  m{i}: {{servers: [http://gpu-{i % 7}:8000/v1]}}" for i in range(MODELS)]
    specs, _, _ = parse_catalog("\n".join(lines) + "\n", source="models.yaml")
    catalog = build_catalog(specs, text=specs[0], image=None, source="models.yaml")
    return ModelRegistry(catalog, backend_factory=default_backend_factory)


@pytest.fixture
def ten_thousand_models(registry, settings, monkeypatch, runtime):
    runtime.replace(RegistryState, RegistryState(registry))
    settings.API_KEYS = [API_KEY]
    settings.METRICS = {**settings.METRICS, "token": "prometheus-token"}
    probes: list[str] = []

    async def probe(self, replica) -> bool:
        probes.append(self.spec.name)
        return self.spec.name != "m3"  # one model's server does not answer

    monkeypatch.setattr(OpenAICompatibleBackend, "probe", probe)
    runtime.replace(readiness.ReadinessReports, readiness.ReadinessReports(max_age=3600))
    return probes


async def test_readyz_is_a_small_summary_and_probes_once_for_many_callers(ten_thousand_models):
    client = AsyncClient()
    responses = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
    assert len(ten_thousand_models) == MODELS  # one round for twenty callers
    for response in responses:
        assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
        assert len(response.content) < 1024
        assert response["Cache-Control"] == "no-store"
    body = responses[0].json()
    assert body["models_total"] == MODELS
    assert body["models_ready"] == MODELS - 1
    assert body["not_ready"] == ["m3"]
    assert "models" not in body


async def test_details_need_credentials(ten_thousand_models):
    response = await AsyncClient().get("/readyz", {"details": "true"})
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert "METRICS__TOKEN" in response.json()["detail"]
    wrong = await AsyncClient().get(
        "/readyz", {"details": "true"}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == HTTPStatus.UNAUTHORIZED
    bad = await AsyncClient().get("/readyz", {"details": "maybe"})
    assert bad.status_code == HTTPStatus.BAD_REQUEST
    assert bad.json()["detail"].startswith("details:")


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer prometheus-token"}, {"X-API-Key": API_KEY}],
    ids=["metrics-token", "api-key"],
)
async def test_details_list_every_model_for_the_metrics_token_or_a_key(
    ten_thousand_models, headers
):
    response = await AsyncClient().get("/readyz", {"details": "true"}, headers=headers)
    body = response.json()
    assert len(body["models"]) == MODELS
    assert body["models"]["m3"]["servers"] == [
        {"server": "http://gpu-3:8000", "reachable": False, "ejected": False, "in_flight": 0}
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_key_limited_to_some_models_sees_only_those(ten_thousand_models, make_key):  # noqa: F811
    from asgiref.sync import sync_to_async

    created = await sync_to_async(make_key)(name="limited", allowed_models=["m1", "m2"])
    response = await AsyncClient().get(
        "/readyz", {"details": "true"}, headers={"X-API-Key": created.full_key}
    )
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert set(response.json()["models"]) == {"m1", "m2"}
