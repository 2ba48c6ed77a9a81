"""
The seed models: `TEXT_MODEL__*` and `IMAGE_MODEL__*`, read by `llmapi/settings.py`.

They keep their documented meaning. The text model is served by `TEXT_MODEL__BASE_URL`'s
servers (comma-separated replicas) or, when that is empty, by the embedded model; the image
model exists when `IMAGE_MODEL__BASE_URL` is set. Their names come from `*__MODEL_NAME`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inference.catalog.types import (
    EMBEDDED_MODEL_NAME,
    JSON_SCHEMA_MODES,
    ROUTING_MODES,
    CatalogError,
    ModelSpec,
)


def seed_specs(
    models: Mapping[str, Mapping[str, Any]], *, embedded_enabled: bool
) -> tuple[ModelSpec | None, ModelSpec | None]:
    """The seed text and image models (None where not configured)."""
    text_raw, image_raw = models["text"], models["image"]
    text = None
    if _servers(text_raw):
        # A model server decides itself whether its model calls tools (vLLM, llama.cpp's server
        # with --jinja, Ollama, OpenAI do); the embedded model does not.
        text = _spec(text_raw, "TEXT_MODEL", backend="openai", capabilities={"chat", "tools"})
    elif embedded_enabled:
        text = _spec(text_raw, "TEXT_MODEL", backend="embedded", capabilities={"chat"})
    image = None
    if _servers(image_raw):
        image = _spec(
            image_raw, "IMAGE_MODEL", backend="openai", capabilities={"chat", "vision", "tools"}
        )
    return text, image


def _servers(raw: Mapping[str, Any]) -> tuple[str, ...]:
    """`BASE_URL` may list several replicas, comma-separated."""
    return tuple(url.strip() for url in raw["base_url"].split(",") if url.strip())


def _spec(
    raw: Mapping[str, Any], prefix: str, *, backend: str, capabilities: set[str]
) -> ModelSpec:
    name = raw["model_name"] or (EMBEDDED_MODEL_NAME if backend == "embedded" else "default")
    mode = raw["json_schema_mode"].strip().lower()
    if mode not in JSON_SCHEMA_MODES:
        raise CatalogError(
            f"{prefix}__JSON_SCHEMA_MODE must be native, prompt or auto, not {raw['json_schema_mode']!r}."
        )
    routing = raw.get("routing", "").strip().lower()
    if routing and routing not in ROUTING_MODES:
        raise CatalogError(
            f"{prefix}__ROUTING must be prefix, least_busy or round_robin, not {raw['routing']!r}."
        )
    return ModelSpec(
        name=name,
        backend=backend,
        servers=_servers(raw),
        api_key=raw["api_key"],
        capabilities=frozenset(capabilities),
        max_concurrency=max(1, raw["max_concurrency"]),
        timeout=raw["timeout"],
        connect_timeout=raw["connect_timeout"],
        queue_timeout=max(0.0, raw["queue_timeout"]),
        max_retries=max(0, raw["max_retries"]),
        eject_after=max(1, raw["eject_after"]),
        eject_seconds=max(0.0, raw["eject_seconds"]),
        routing=routing,
        json_retries=max(0, raw["json_retries"]),
        json_schema_mode=mode,
        max_image_bytes=raw.get("max_image_bytes", ModelSpec.max_image_bytes),
        max_image_side=raw.get("max_image_side", ModelSpec.max_image_side),
        defaults=dict(raw["defaults"]),
        origin=prefix,
    )
