from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.apps import AppConfig

if TYPE_CHECKING:
    from inference.registry import ModelRegistry


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Inference: the model catalog, backends and structured output"

    _registry: ModelRegistry | None = None
    _lock = threading.Lock()

    @property
    def registry(self) -> ModelRegistry:
        """Built on first use, from the settings; `manage.py serve` builds it at start-up."""
        if self._registry is None:
            with self._lock:
                if self._registry is None:
                    from inference.registry import build_registry

                    self._registry = build_registry()
        return self._registry

    def ready(self) -> None:
        from django.core.signals import setting_changed

        setting_changed.connect(self._settings_changed)

    def _settings_changed(self, *, setting: str, **kwargs) -> None:
        # Tests (and anything else) that change the model settings get a registry built
        # from the new ones, with nothing to reset by hand.
        if setting in ("LLMAPI_MODELS", "LLMAPI_MODELS_FILE", "LOCAL_MODEL"):
            self.reset_registry()

    def reset_registry(self) -> None:
        """Forget the registry, so that the next use reads the settings again."""
        with self._lock:
            self._registry = None
