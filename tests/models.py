"""Model specs for unit tests: the seed models as the settings define them, with changes."""

from __future__ import annotations

from dataclasses import replace

from django.conf import settings

from inference.catalog import ModelSpec
from inference.catalog.seed import seed_specs
from inference.services import CallContext

# The context of a caller that may use every model and has no quota to wait for.
ANYONE = CallContext(may_use=lambda spec: True)


def text_spec(**changes) -> ModelSpec:
    """The seed text model, served by `http://model:8000` unless `changes` say otherwise."""
    raw = {**settings.LLMAPI_MODELS["text"], "base_url": "http://model:8000"}
    text, _ = seed_specs({**settings.LLMAPI_MODELS, "text": raw}, embedded_enabled=True)
    assert text is not None
    return replace(text, **changes)


def image_spec(**changes) -> ModelSpec:
    raw = {**settings.LLMAPI_MODELS["image"], "base_url": "http://vlm:8000"}
    _, image = seed_specs({**settings.LLMAPI_MODELS, "image": raw}, embedded_enabled=True)
    assert image is not None
    return replace(image, **changes)
