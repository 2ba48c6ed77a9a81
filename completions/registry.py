"""
The configured models, read once from settings.

Two models exist: `text` (an LLM) and `image` (a VLM). Each is either served by an
OpenAI-compatible server (`*_MODEL__BASE_URL`) or, for the text model only, by the embedded
local model when no server is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

LOCAL_MODEL_NAME = "smollm2-135m-instruct"


@dataclass(frozen=True, eq=False)  # hashed by identity: one backend per configured model
class ModelSpec:
    kind: str  # "text" or "image"
    env_prefix: str  # "TEXT_MODEL" or "IMAGE_MODEL", for messages that name variables
    name: str
    base_url: str
    api_key: str = field(repr=False)
    max_concurrency: int
    timeout: float
    connect_timeout: float
    queue_timeout: float
    defaults: dict
    max_retries: int = 2
    eject_after: int = 3
    eject_seconds: float = 30.0
    json_retries: int = 1
    json_schema_mode: str = "auto"  # native | prompt | auto
    max_image_bytes: int = 0
    max_image_side: int = 0

    @property
    def base_urls(self) -> list[str]:
        """`BASE_URL` may list several replicas, comma-separated."""
        return [url.strip() for url in self.base_url.split(",") if url.strip()]

    @property
    def is_local(self) -> bool:
        return not self.base_url and self.kind == "text" and settings.LOCAL_MODEL["enabled"]

    @property
    def label(self) -> str:
        return f"{self.kind} model"


def available_models() -> list[ModelSpec]:
    """The models that can answer: remote ones with a server, and the embedded text model."""
    specs = [get_model_spec("text"), get_model_spec("image")]
    return [spec for spec in specs if spec.base_url or spec.is_local]


def find_model(name: str, *, needs_vision: bool) -> ModelSpec | None:
    """The available model called `name`; the image model when the request carries images."""
    matches = [spec for spec in available_models() if spec.name == name]
    if needs_vision:
        matches.sort(key=lambda spec: spec.kind != "image")
    return matches[0] if matches else None


@cache
def get_model_spec(kind: str) -> ModelSpec:
    raw = settings.LLMAPI_MODELS[kind]
    prefix = f"{kind.upper()}_MODEL"
    name = raw["model_name"]
    if not name:
        name = LOCAL_MODEL_NAME if (kind == "text" and not raw["base_url"]) else "default"
    return ModelSpec(
        kind=kind,
        env_prefix=prefix,
        name=name,
        base_url=raw["base_url"].strip(),
        api_key=raw["api_key"],
        max_concurrency=max(1, raw["max_concurrency"]),
        timeout=raw["timeout"],
        connect_timeout=raw["connect_timeout"],
        queue_timeout=max(0.0, raw["queue_timeout"]),
        defaults=dict(raw["defaults"]),
        max_retries=max(0, raw["max_retries"]),
        eject_after=max(1, raw["eject_after"]),
        eject_seconds=max(0.0, raw["eject_seconds"]),
        json_retries=max(0, raw["json_retries"]),
        json_schema_mode=_schema_mode(prefix, raw["json_schema_mode"]),
        max_image_bytes=raw.get("max_image_bytes", 0),
        max_image_side=raw.get("max_image_side", 0),
    )


def _schema_mode(prefix: str, value: str) -> str:
    mode = value.strip().lower()
    if mode not in ("native", "prompt", "auto"):
        raise ImproperlyConfigured(
            f"{prefix}__JSON_SCHEMA_MODE must be native, prompt or auto, not {value!r}."
        )
    return mode
