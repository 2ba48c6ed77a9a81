"""
The catalog file (`LLMAPI_MODELS_FILE`): YAML, validated with errors that name the line and the
field.

YAML rather than TOML: PyYAML's composed nodes carry the line of every value, so an error can
point at the exact line of a bad field (Python's `tomllib` gives positions only for syntax
errors), and YAML is what operators of vLLM, Kubernetes and LiteLLM's proxy already write.
Only plain data is read (PyYAML's safe loader): no tags, no objects. A file larger than
`MAX_CATALOG_BYTES` or nested deeper than `MAX_CATALOG_DEPTH` is refused before it is composed
(PyYAML's composer recurses once per level: a 40 KB `[[[...]]]` would exhaust Python's stack).

    default_text_model: llama-8b        # the seed endpoints' text model (optional)
    default_image_model: qwen-vl        # the seed endpoints' image model (optional)
    models:
      llama-8b:
        servers: [http://gpu-1:8000/v1, http://gpu-2:8000/v1]
        upstream_name: meta-llama/Llama-3.1-8B-Instruct
        api_key_env: VLLM_API_KEY       # read from the environment; keeps secrets out of files
        aliases: [chat, default]
        capabilities: [chat, tools]
        max_concurrency: 32
        routing: prefix                 # or least_busy, round_robin (docs/routing.md)
        params: {temperature: 0.2, max_tokens: 1024}
        fallbacks: [smollm2]
      smollm2:
        backend: embedded
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inference.catalog.types import SEED_PARAM_DEFAULTS, CatalogError, ModelSpec

# A catalog of 10,000 models is about 1 MB; a real file nests 4 levels deep
# (models.<name>.params.<field>).
MAX_CATALOG_BYTES = 16 * 1024 * 1024
MAX_CATALOG_DEPTH = 16

# libyaml's parser when PyYAML was built with it (ten times faster on a large catalog).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class ParamsEntry(_Strict):
    """Defaults for sampling parameters a request leaves out (the seed API's ranges)."""

    temperature: float = Field(SEED_PARAM_DEFAULTS["temperature"], ge=0, le=2)
    max_tokens: int = Field(SEED_PARAM_DEFAULTS["max_tokens"], gt=0)
    top_p: float = Field(SEED_PARAM_DEFAULTS["top_p"], ge=0, le=1)
    frequency_penalty: float = Field(SEED_PARAM_DEFAULTS["frequency_penalty"], ge=-2, le=2)
    presence_penalty: float = Field(SEED_PARAM_DEFAULTS["presence_penalty"], ge=-2, le=2)
    seed: int = SEED_PARAM_DEFAULTS["seed"]


class ModelEntry(_Strict):
    backend: Literal["openai", "embedded"] = "openai"
    servers: list[Annotated[str, Field(pattern=r"^https?://[^\s]+$")]] = []
    upstream_name: str = ""
    api_key: str = ""
    api_key_env: str = ""
    aliases: list[Name] = []
    capabilities: list[Literal["chat", "vision", "embeddings", "tools", "responses"]] = ["chat"]
    fallbacks: list[Name] = []
    max_concurrency: int = Field(10, ge=1)
    timeout: float = Field(120.0, gt=0)
    connect_timeout: float = Field(5.0, gt=0)
    queue_timeout: float = Field(30.0, ge=0)
    max_retries: int = Field(2, ge=0, le=10)
    eject_after: int = Field(3, ge=1)
    eject_seconds: float = Field(30.0, ge=0)
    routing: Literal["prefix", "least_busy", "round_robin"] | None = None
    json_retries: int = Field(1, ge=0, le=5)
    json_schema_mode: Literal["native", "prompt", "auto"] = "auto"
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_image_side: int = Field(2048, ge=0)
    params: ParamsEntry = ParamsEntry()

    @field_validator("servers")
    @classmethod
    def _servers_unique(cls, servers: list[str]) -> list[str]:
        if len(set(servers)) != len(servers):
            raise ValueError("the same server is listed twice")
        return servers


class CatalogFile(_Strict):
    default_text_model: Name | None = None
    default_image_model: Name | None = None
    models: dict[Name, ModelEntry] = Field(min_length=1)


def read_catalog_file(path: Path) -> tuple[list[ModelSpec], str | None, str | None]:
    """The models of a catalog file, and its default text and image model names."""
    try:
        size = path.stat().st_size
        if size > MAX_CATALOG_BYTES:
            raise CatalogError(
                f"{path}: is {size} bytes, more than the {MAX_CATALOG_BYTES} a catalog may "
                "hold (LLMAPI_MODELS_FILE)."
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(
            f"{path}: cannot be read ({exc.strerror}) (LLMAPI_MODELS_FILE)."
        ) from None
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: is not UTF-8 text (LLMAPI_MODELS_FILE).") from None
    return parse_catalog(text, source=str(path))


def parse_catalog(text: str, *, source: str) -> tuple[list[ModelSpec], str | None, str | None]:
    if len(text) > MAX_CATALOG_BYTES:
        raise CatalogError(
            f"{source}: is {len(text)} characters, more than the {MAX_CATALOG_BYTES} a catalog "
            "may hold."
        )
    try:
        _check_depth(text, source=source)
        root = yaml.compose(text, Loader=_LOADER)
        # The plain data from the same nodes (one parse, not two).
        data = None if root is None else yaml.SafeLoader("").construct_document(root)
    except RecursionError:
        # A backstop: _check_depth refuses deep nesting before anything recurses.
        raise CatalogError(f"{source}: nested too deeply to be read.") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}, line {mark.line + 1}" if mark else source
        raise CatalogError(f"{where}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{source}: expected a mapping with a `models:` key at the top.")
    try:
        parsed = CatalogFile.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(_describe(exc, root, source)) from None

    specs = []
    model_lines = _key_lines(root, "models")
    for name, entry in parsed.models.items():
        origin = f"{source}: models.{name}"
        line = model_lines.get(name)
        where = f"{source}, line {line}" if line else source
        if entry.backend == "openai" and not entry.servers:
            raise CatalogError(f"{where}: models.{name}.servers: an openai model needs a server.")
        if entry.backend == "embedded" and entry.servers:
            raise CatalogError(
                f"{where}: models.{name}.servers: the embedded model runs inside the gateway "
                "and takes no servers."
            )
        api_key = entry.api_key
        if entry.api_key_env:
            api_key = os.environ.get(entry.api_key_env, "")
            if not api_key:
                raise CatalogError(
                    f"{where}: models.{name}.api_key_env: the environment variable "
                    f"{entry.api_key_env} is not set."
                )
        specs.append(
            ModelSpec(
                name=name,
                backend=entry.backend,
                servers=tuple(entry.servers),
                upstream_name=entry.upstream_name,
                api_key=api_key,
                aliases=tuple(entry.aliases),
                capabilities=frozenset(entry.capabilities),
                fallbacks=tuple(entry.fallbacks),
                max_concurrency=entry.max_concurrency,
                timeout=entry.timeout,
                connect_timeout=entry.connect_timeout,
                queue_timeout=entry.queue_timeout,
                max_retries=entry.max_retries,
                eject_after=entry.eject_after,
                eject_seconds=entry.eject_seconds,
                routing=entry.routing or "",
                json_retries=entry.json_retries,
                json_schema_mode=entry.json_schema_mode,
                max_image_bytes=entry.max_image_bytes,
                max_image_side=entry.max_image_side,
                defaults=entry.params.model_dump(),
                origin=origin,
            )
        )
    return specs, parsed.default_text_model, parsed.default_image_model


def _key_lines(root: yaml.Node | None, key: str) -> dict[str, int]:
    """The 1-based line of each key of the mapping under `key` (one pass, for any size)."""
    mapping = None
    if isinstance(root, yaml.MappingNode):
        mapping = next((value for k, value in root.value if k.value == key), None)
    if not isinstance(mapping, yaml.MappingNode):
        return {}
    lines: dict[str, int] = {}
    for k, _ in mapping.value:
        lines.setdefault(str(k.value), k.start_mark.line + 1)
    return lines


def _check_depth(text: str, *, source: str) -> None:
    """
    Refuse nesting deeper than MAX_CATALOG_DEPTH, naming the line where it goes too deep.
    PyYAML's parser is a loop over events (no recursion), so this walk is safe at any depth.
    """
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_CATALOG_DEPTH:
                    raise _too_deep(source, event.start_mark)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        # libyaml refuses very deep nesting itself, a little ahead of the events it yields.
        if "nesting depth" in str(exc.problem):
            raise _too_deep(source, exc.problem_mark) from None
        raise


def _too_deep(source: str, mark: Any) -> CatalogError:
    where = f"{source}, line {mark.line + 1}" if mark else source
    return CatalogError(
        f"{where}: nested more than {MAX_CATALOG_DEPTH} levels deep; a catalog needs 4 "
        "(models.<name>.params.<field>)."
    )


def _describe(exc: ValidationError, root: yaml.Node | None, source: str) -> str:
    """Each error as `file, line N: models.x.field: message`, the first few of them."""
    lines = []
    for error in exc.errors()[:5]:
        location = tuple(error["loc"])
        dotted = ".".join(str(part) for part in location) or "(top level)"
        line = _line_of(root, location)
        where = f"{source}, line {line}" if line else source
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{where}: {dotted}: {message}")
    more = len(exc.errors()) - len(lines)
    if more > 0:
        lines.append(f"(and {more} more)")
    return "\n".join(lines)


def _line_of(root: yaml.Node | None, location: tuple[Any, ...]) -> int | None:
    """The 1-based line of the value at `location` (keys and list indexes), or of its parent."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in location:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
