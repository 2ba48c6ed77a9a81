"""
The model catalog: every model the gateway can route to, by name or alias.

Models come from two places, merged into one `Catalog`:

* the seed variables `TEXT_MODEL__*` and `IMAGE_MODEL__*` (`.env.example`), which define the
  models the seed endpoints use by default, exactly as they always have: a text model served
  by its server or, with no `TEXT_MODEL__BASE_URL`, by the embedded model; an image model when
  `IMAGE_MODEL__BASE_URL` is set;
* an optional catalog file, `LLMAPI_MODELS_FILE` (YAML, see `catalog_file.py`), with any number
  of named models, their aliases, capabilities, replicas, limits, defaults and fallbacks.

A `Catalog` is immutable. Reloading builds a new one; requests in flight keep the `ModelSpec`
objects they started with.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# "responses": the model's servers speak OpenAI's Responses API (/v1/responses is passed through).
CAPABILITIES = ("chat", "vision", "embeddings", "tools", "responses")
BACKENDS = ("openai", "embedded")
JSON_SCHEMA_MODES = ("native", "prompt", "auto")
ROUTING_MODES = ("prefix", "least_busy", "round_robin")
EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"

# The sampling parameters every model has a default for, and the seed's defaults.
SEED_PARAM_DEFAULTS: dict[str, Any] = {
    "temperature": 0.0,
    "max_tokens": 2048,
    "top_p": 1.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "seed": 0,
}


class CatalogError(Exception):
    """The catalog's configuration is invalid; the message names where and what."""


@dataclass(frozen=True, eq=False)  # hashed by identity: one backend and limiter per spec
class ModelSpec:
    """One model of the catalog, as configured."""

    name: str  # the name clients use, and the one `/v1/models` lists
    backend: str  # "openai" (servers below) or "embedded" (llama.cpp inside the gateway)
    servers: tuple[str, ...] = ()  # replica base URLs of an "openai" model
    upstream_name: str = ""  # the model name sent to the servers; the catalog name when empty
    api_key: str = field(default="", repr=False)
    aliases: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset({"chat"})
    fallbacks: tuple[str, ...] = ()
    max_concurrency: int = 10
    timeout: float = 120.0
    connect_timeout: float = 5.0
    queue_timeout: float = 30.0
    max_retries: int = 2
    eject_after: int = 3
    eject_seconds: float = 30.0
    # How requests are spread over the servers (inference.routing); "" means prefix-aware for
    # a model with several servers.
    routing: str = ""
    json_retries: int = 1
    json_schema_mode: str = "auto"
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_side: int = 2048
    defaults: Mapping[str, Any] = field(default_factory=lambda: dict(SEED_PARAM_DEFAULTS))
    # Where the model is configured, for messages: "TEXT_MODEL" (the seed variables) or
    # "models.yaml: models.<name>" (the catalog file).
    origin: str = ""

    @property
    def served_name(self) -> str:
        return self.upstream_name or self.name

    @property
    def routing_mode(self) -> str:
        """`routing`, or its default: `prefix` where there are several servers to choose from."""
        if self.routing:
            return self.routing
        return "prefix" if len(self.servers) > 1 else "least_busy"

    @property
    def is_embedded(self) -> bool:
        return self.backend == "embedded"

    @property
    def label(self) -> str:
        """How messages name the model: the seed models as before, catalog models by name."""
        seed_labels = {"TEXT_MODEL": "text model", "IMAGE_MODEL": "image model"}
        return seed_labels.get(self.origin) or f"model '{self.name}'"

    def setting(self, key: str) -> str:
        """The name of one of this model's settings, as the operator wrote it."""
        if self.origin.isupper():  # a seed variable prefix such as TEXT_MODEL
            return f"{self.origin}__{key.upper()}"
        return f"{self.origin}.{key}"

    def has(self, capability: str) -> bool:
        return capability in self.capabilities


@dataclass(frozen=True)
class Catalog:
    """
    The models, their names and aliases, and the defaults of the seed endpoints.

    Names are unique, with one exception kept from the seed configuration: the text and the
    image model may carry the same name (one server often serves both). `resolve` then picks
    the one with the capability the request needs.
    """

    specs: tuple[ModelSpec, ...]
    text: ModelSpec | None = None
    image: ModelSpec | None = None
    source: str = "environment"  # what it was loaded from, for logs and /readyz
    # (pattern, model name) pairs tried in order when no name or alias matches
    # (LLMAPI_MODEL_PATTERNS): claude-* names onto a team's model, for example.
    patterns: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        index: dict[str, list[ModelSpec]] = {}
        for spec in self.specs:
            for name in (spec.name, *spec.aliases):
                index.setdefault(name, []).append(spec)
        object.__setattr__(self, "_index", index)

    def resolve(self, name: str, *, capability: str = "chat") -> ModelSpec | None:
        """
        The model called `name` (or aliased so, or matched by a pattern), preferring one with
        `capability`.
        """
        matches: list[ModelSpec] = self._index.get(name, [])  # type: ignore[attr-defined]
        if not matches:
            target = next((t for p, t in self.patterns if fnmatch.fnmatchcase(name, p)), None)
            matches = self._index.get(target, []) if target else []  # type: ignore[attr-defined]
        if not matches:
            return None
        return next((spec for spec in matches if spec.has(capability)), matches[0])

    def fallbacks_of(self, spec: ModelSpec, *, capability: str = "chat") -> list[ModelSpec]:
        found = (self.resolve(name, capability=capability) for name in spec.fallbacks)
        return [fallback for fallback in found if fallback is not None]

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def names(self) -> list[str]:
        """Every model name once, in configuration order."""
        return list(dict.fromkeys(spec.name for spec in self.specs))


def build_catalog(
    specs: Iterable[ModelSpec],
    *,
    text: ModelSpec | None,
    image: ModelSpec | None,
    source: str,
    patterns: Iterable[tuple[str, str]] = (),
) -> Catalog:
    """Put models together and check what relates them: unique names and aliases, fallbacks."""
    specs = tuple(specs)
    owners: dict[str, ModelSpec] = {}  # every name and alias -> the model that has it
    for spec in specs:
        for name in (spec.name, *spec.aliases):
            owner = owners.get(name)
            seed_pair = owner is not None and {owner, spec} == {text, image} and name == spec.name
            if owner is not None and not seed_pair:
                raise CatalogError(
                    f"The model name or alias '{name}' of {spec.origin} is already used by "
                    f"{owner.origin}."
                )
            owners[name] = spec
    for spec in specs:
        for fallback in spec.fallbacks:
            if fallback not in owners:
                raise CatalogError(
                    f"{spec.setting('fallbacks')}: the fallback '{fallback}' is not a model "
                    "or alias of the catalog."
                )
            if owners[fallback] is spec:
                raise CatalogError(
                    f"{spec.setting('fallbacks')}: a model cannot fall back to itself."
                )
    for spec in specs:
        if spec.api_key and any("@" in urlsplit(server).netloc for server in spec.servers):
            raise CatalogError(
                f"{spec.setting('base_url' if spec.origin.isupper() else 'servers')} holds a user "
                "name and password (sent as HTTP Basic auth) and "
                f"{spec.setting('api_key')} is set too (sent as a Bearer token); the model "
                "server can get only one of them. Remove one."
            )
    embedded = [spec.name for spec in specs if spec.is_embedded]
    if len(embedded) > 1:
        raise CatalogError(
            "Only one model can use the embedded backend (one GGUF file per process); "
            f"found {', '.join(embedded)}."
        )
    patterns = tuple(patterns)
    for pattern, target in patterns:
        if target not in owners:
            raise CatalogError(
                f"LLMAPI_MODEL_PATTERNS: '{pattern}={target}' names no model or alias of the "
                "catalog."
            )
    return Catalog(specs, text=text, image=image, source=source, patterns=patterns)
