"""
The registry: the one object that owns the model catalog, a backend per model and a set of
concurrency slots per model. It is built at start-up and swapped whole on reload.

Reloading (SIGHUP, or `manage.py reload_models`) builds a new catalog first; a broken one is
refused and the old one stays. Models whose configuration did not change keep their backend
(with its replicas' health) and their slots, so in-flight requests are still counted against
the same limit. Requests in flight keep the `ModelSpec`, backend and slots they started with.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

from inference.catalog import Catalog, ModelSpec
from inference.catalog.loader import load_catalog
from inference.exceptions import ModelNotConfigured
from infra.runtime import get_runtime
from limits import redis_client
from limits.redis_slots import RedisSlots
from limits.slots import LocalSlots

logger = logging.getLogger(__name__)

BackendFactory = Callable[[ModelSpec], Any]


def _config(spec: ModelSpec) -> tuple:
    values = dataclasses.asdict(spec)
    values["defaults"] = tuple(sorted(values["defaults"].items()))
    values["capabilities"] = tuple(sorted(values["capabilities"]))
    return tuple(sorted(values.items()))


class ModelRegistry:
    def __init__(self, catalog: Catalog, *, backend_factory: BackendFactory) -> None:
        self._backend_factory = backend_factory
        self._lock = threading.Lock()
        self._catalog = catalog
        self._backends: dict[ModelSpec, Any] = {}
        self._slots: dict[ModelSpec, LocalSlots] = {spec: self._new_slots(spec) for spec in catalog}

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def backend(self, spec: ModelSpec) -> Any:
        """The backend serving `spec`, created on first use."""
        backend = self._backends.get(spec)
        if backend is None:
            with self._lock:
                backend = self._backends.get(spec)
                if backend is None:
                    backend = self._backends[spec] = self._backend_factory(spec)
        return backend

    def slots(self, spec: ModelSpec) -> LocalSlots:
        slots = self._slots.get(spec)
        if slots is None:  # a spec from a catalog that has since been replaced
            with self._lock:
                slots = self._slots.setdefault(spec, self._new_slots(spec))
        return slots

    def loaded(self, spec: ModelSpec) -> bool:
        """Whether the backend of `spec` exists (for the embedded model: is loaded)."""
        return spec in self._backends

    def backends(self) -> dict[ModelSpec, Any]:
        """The backends created so far, by model."""
        return dict(self._backends)

    def swap(self, catalog: Catalog) -> list[str]:
        """
        Put `catalog` in place. Unchanged models keep their backend and slots; the old specs'
        objects stay reachable by the requests that hold them. Returns the changed model names.
        """
        with self._lock:
            old = {_config(spec): spec for spec in self._catalog}
            backends: dict[ModelSpec, Any] = {}
            slots: dict[ModelSpec, LocalSlots] = {}
            changed = []
            for spec in catalog:
                previous = old.get(_config(spec))
                if previous is not None:
                    if previous in self._backends:
                        backends[spec] = self._backends[previous]
                    slots[spec] = self._slots.get(previous) or self._new_slots(spec)
                else:
                    slots[spec] = self._new_slots(spec)
                    changed.append(spec.name)
            self._catalog, self._backends, self._slots = catalog, backends, slots
        return changed

    def reload(self) -> list[str]:
        """Read the configuration again; raises `CatalogError` and keeps the old catalog."""
        changed = self.swap(load_catalog())
        logger.info(
            "Model catalog reloaded from %s: %d models, changed: %s",
            self._catalog.source,
            len(self._catalog),
            ", ".join(changed) or "none",
        )
        return changed

    @staticmethod
    def _new_slots(spec: ModelSpec) -> LocalSlots:
        # With Redis, a model server's MAX_CONCURRENCY holds across every gateway process;
        # the embedded model lives in this process, so its slots stay here.
        if redis_client.enabled() and not spec.is_embedded:
            return RedisSlots(spec.origin or spec.name, spec.max_concurrency)  # type: ignore[return-value]
        return LocalSlots(spec.max_concurrency)


def default_backend_factory(spec: ModelSpec) -> Any:
    """An HTTP backend for a model with servers; the llama.cpp one for the embedded model."""
    if spec.is_embedded:
        from inference.backends import embedded

        try:
            return embedded.load_backend(spec)
        except embedded.LocalModelError as exc:
            raise ModelNotConfigured(str(exc)) from None
    from inference.backends.openai_http import OpenAICompatibleBackend

    return OpenAICompatibleBackend(spec)


class RegistryState:
    """The runtime's registry, built from the model settings (again when they change)."""

    SETTINGS = ("LLMAPI_MODELS", "LLMAPI_MODELS_FILE", "LOCAL_MODEL")

    def __init__(self, registry: ModelRegistry | None = None) -> None:
        self.registry = registry if registry is not None else build_registry()


def get_registry() -> ModelRegistry:
    """The runtime's registry; start-up builds it (a broken catalog stops the start)."""
    return get_runtime().part(RegistryState).registry


def build_registry() -> ModelRegistry:
    return ModelRegistry(load_catalog(), backend_factory=default_backend_factory)
