from __future__ import annotations

import pytest
from django.apps import apps
from django.test import override_settings

from observability import metrics

OFF = {"token": "", "port": 0, "host": "127.0.0.1", "key_labels": False}


@pytest.fixture
def configured():
    """Runs the app's start-up configuration, then restores the test settings' one."""

    def configure(**options):
        with override_settings(METRICS={**OFF, **options}):
            apps.get_app_config("observability").ready()

    yield configure
    configure()


@pytest.mark.parametrize(
    ("options", "enabled"),
    [({}, False), ({"token": "t0k3n-long-enough"}, True), ({"port": 9464}, True)],
)
def test_recording_is_on_only_when_someone_can_read_the_metrics(configured, options, enabled):
    configured(**options)
    assert metrics._state.enabled is enabled


def test_key_labels_follow_the_setting(configured):
    configured(token="t0k3n-long-enough", key_labels=True)
    assert metrics._state.key_labels is True


def test_the_configured_model_names_are_catalog_labels(configured):
    with override_settings(LLMAPI_MODELS={"text": {"model_name": "Qwen/Qwen2.5-7B-Instruct"}}):
        configured(token="t0k3n-long-enough")
    assert metrics.model_label("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
