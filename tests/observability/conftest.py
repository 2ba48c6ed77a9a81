"""Fixtures for the observability tests: recording on, and a model name no other test uses."""

from __future__ import annotations

import uuid

import pytest

from observability import metrics


@pytest.fixture
def recording():
    """Recording on (the test settings configure no metrics access, which turns it off)."""
    metrics.configure(enabled=True, key_labels=False)
    yield metrics
    metrics.configure(enabled=False, key_labels=False)


@pytest.fixture
def model(recording) -> str:
    """A catalog model of this test's own, so values from other tests never mix in."""
    name = f"model-{uuid.uuid4().hex[:8]}"
    metrics.register_models([name])
    return name


def sample(name: str, **labels: str) -> float:
    """A sample's value in this process's registry (0 when the series does not exist yet)."""
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
