"""
Structured output the gateway can vouch for.

Model servers honour `response_format` unevenly (some ignore `json_schema`, grammars skip
`minimum`/`maximum`, small models drift), so the gateway validates every JSON answer itself:
`json_object` must parse as a JSON object, `json_schema` must also validate against the schema
(Draft 2020-12 unless the schema's `$schema` says otherwise).

A client's JSON Schema is data, never instructions, and a model can be prompted to write the
answer that is costliest to check. So:

- `inspect_schema` runs when the request arrives, before any model call: size, depth, the
  dialect's metaschema, every `$ref` resolved inside the schema itself (nothing is ever fetched:
  the registry's `retrieve` refuses), no `$ref` cycle that never consumes input (`{"$ref": "#"}`),
  a bounded fan-out through `$ref`/`anyOf`/..., and every `pattern` compiled by RE2.
- `check_output` validates with jsonschema, but `pattern`, `patternProperties` and
  `additionalProperties` match with RE2 (linear time, no ReDoS), `uniqueItems` hashes (linear,
  not jsonschema's quadratic fallback), and every keyword checks a deadline.
- `check_output_off_loop` runs it in a small dedicated thread pool under that deadline, so the
  event loop (and /healthz) never waits for it.

Why answers are checked by jsonschema (Python) with RE2 and not by jsonschema-rs: measured here,
jsonschema-rs is faster on normal schemas but holds the GIL while it validates (the event loop
stalls even when it runs in a thread), cannot be interrupted, fetches `file://` and `http://`
references unless given a retriever, and collecting the errors of an 18-level `anyOf` chain
took 28 s and 2.8 GB. jsonschema's keywords are plain Python functions: public
`validators.extend` swaps the unsafe ones and adds the deadline check. jsonschema-rs does one
bounded job: checking the client's schema against its dialect's metaschema (see
`_metaschema_validator`).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import re
import reprlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import jsonschema_rs
import orjson
import re2
import referencing.jsonschema
from django.conf import settings
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from typing_extensions import TypeIs

from inference.exceptions import OutputCheckTooCostly, quote
from infra.json_depth import json_depth
from infra.runtime import get_runtime


class StructuredState:
    """The runtime's limits (STRUCTURED_OUTPUT, read when built) and its validation threads."""

    SETTINGS = ("STRUCTURED_OUTPUT",)

    def __init__(self) -> None:
        self.limits: dict[str, Any] = dict(settings.STRUCTURED_OUTPUT)
        self.pool: ThreadPoolExecutor | None = None
        self.lock = threading.Lock()


def _state() -> StructuredState:
    return get_runtime().part(StructuredState)


def _limits() -> dict[str, Any]:
    return _state().limits


MAX_REPORTED_ERRORS = 10
# Errors gathered before sorting and reporting the first MAX_REPORTED_ERRORS.
MAX_COLLECTED_ERRORS = 100
_FENCE = re.compile(r"^```(?:json|JSON)?\s*\n(.*?)\n?```$", re.DOTALL)
# Short reprs for messages about values a model wrote (which may be a megabyte long).
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlist = _short.maxdict = 6


class RefusedSchema(ValueError):
    """The client's JSON Schema is not accepted; the message says why, quoting little of it."""


@dataclass(frozen=True)
class OutputCheck:
    valid: bool
    text: str  # the JSON text (without a Markdown fence a model may have wrapped it in)
    parsed: Any = None
    errors: list[dict[str, str]] = field(default_factory=list)


def wants_json(response_format: dict | None) -> TypeIs[dict]:
    if not response_format:
        return False
    return response_format.get("type") in ("json_object", "json_schema")


def schema_of(response_format: dict) -> dict | None:
    if response_format.get("type") == "json_schema":
        return response_format["json_schema"]["schema"]
    return None


def schema_format(schema: dict) -> dict:
    """A `json_schema` response format for `schema` (to check a strict tool's arguments)."""
    return {"type": "json_schema", "json_schema": {"name": "arguments", "schema": schema}}


def strict_tool_schemas(tools: Any) -> dict[str, dict]:
    """The parameters schema of each function tool marked `strict: true`, by function name."""
    strict: dict[str, dict] = {}
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            isinstance(function, dict)
            and function.get("strict") is True
            and isinstance(function.get("name"), str)
            and isinstance(function.get("parameters"), dict)
        ):
            strict[function["name"]] = function["parameters"]
    return strict


def schema_validator_class(schema: dict) -> type[jsonschema.protocols.Validator]:
    """The validator for the schema's `$schema` dialect, Draft 2020-12 when it names none."""
    return jsonschema.validators.validator_for(schema, default=Draft202012Validator)


# --- Request time: is this schema safe to use? ------------------------------------------------


def _refuse_retrieval(uri: str) -> Resource:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


# The only registry client schemas ever see: what is not inside the schema is not found.
NO_RETRIEVAL: Registry = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]

# Where subschemas sit, by whether they apply to the same value (in place) or to a part of it.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas", "dependencies")
_PART_ONE = (
    "items",
    "additionalItems",
    "additionalProperties",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
)
_PART_LIST = ("prefixItems", "items")
_PART_MAP = ("properties", "patternProperties")
_DEFINITIONS = ("$defs", "definitions")
_REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")


def inspect_schema(schema: dict) -> None:
    """
    Refuse, with `RefusedSchema`, a client schema the gateway must not validate answers with.
    Runs in milliseconds for schemas within the limits; nothing is fetched.
    """
    depth = json_depth(schema, _limits()["max_schema_depth"])
    if depth > _limits()["max_schema_depth"]:
        raise RefusedSchema(
            f"is nested more than {_limits()['max_schema_depth']} levels deep "
            "(STRUCTURED_OUTPUT__MAX_SCHEMA_DEPTH)."
        )
    size = len(orjson.dumps(schema))
    if size > _limits()["max_schema_bytes"]:
        raise RefusedSchema(
            f"is {size} bytes as JSON; the limit is {_limits()['max_schema_bytes']} "
            "(STRUCTURED_OUTPUT__MAX_SCHEMA_BYTES)."
        )
    _check_against_metaschema(schema)
    _SchemaGraph(schema).check()


def _check_against_metaschema(schema: dict) -> None:
    validator_class = schema_validator_class(schema)
    metaschema = _metaschema_validator(validator_class)  # type: ignore[arg-type]
    if metaschema is None:  # Draft 3, which jsonschema-rs does not know
        try:
            validator_class.check_schema(schema)
        except jsonschema.SchemaError as exc:
            path, message = list(exc.path), exc.message
        else:
            return
    else:
        error = next(iter(metaschema.iter_errors(schema)), None)
        if error is None:
            return
        path, message = list(error.instance_path), error.message
    where = "/".join(str(part) for part in path) or "(root)"
    raise RefusedSchema(f"is not a valid JSON Schema at {quote(where)}: {quote(message)}")


def _refuse_retrieval_rs(uri: str) -> Any:
    raise LookupError(f"{uri} is not fetched")


@functools.cache
def _metaschema_validator(validator_class: Any) -> Any:
    """
    The dialect's metaschema as a jsonschema-rs validator. Checking a 60 KB schema against the
    Draft 2020-12 metaschema takes jsonschema about a second, on the event loop (the serializer
    runs there); jsonschema-rs takes under a millisecond. It checks only the schema, against
    metaschemas it bundles, and fetches nothing.
    """
    try:
        return jsonschema_rs.validator_for(
            validator_class.META_SCHEMA, retriever=_refuse_retrieval_rs
        )
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError):
        return None


class _SchemaGraph:
    """Every subschema of one client schema, and which ones apply to the same value."""

    def __init__(self, schema: dict) -> None:
        self.specification = referencing.jsonschema.specification_with(
            str(schema.get("$schema", "")), default=referencing.jsonschema.DRAFT202012
        )
        root = self.specification.create_resource(schema)
        self.root_resolver = NO_RETRIEVAL.resolver_with_root(root)
        self.schema = schema
        self.where: dict[int, str] = {}  # id(subschema) -> its JSON pointer, for messages
        self.in_place: dict[int, list[int]] = {}
        self.has_pattern_properties = False
        self.has_unevaluated_properties = False

    def check(self) -> None:
        pending = [(self.schema, "#", self.root_resolver)]
        while pending:
            node, pointer, resolver = pending.pop()
            pending.extend(self._visit(node, pointer, resolver))
        if self.has_pattern_properties and self.has_unevaluated_properties:
            raise RefusedSchema(
                "uses unevaluatedProperties together with patternProperties, which the gateway "
                "cannot check in linear time; use additionalProperties instead."
            )
        self._refuse_cycles()
        self._refuse_fan_out()

    def _visit(self, node: Any, pointer: str, resolver) -> Iterator[tuple[Any, str, Any]]:
        """Record `node` and its subschemas; yield the targets of its references to visit."""
        if not isinstance(node, dict) or id(node) in self.where:
            return
        self.where[id(node)] = pointer
        edges = self.in_place.setdefault(id(node), [])
        if self.specification.id_of(node) is not None:  # a new base URI for relative refs
            resolver = resolver.in_subresource(self.specification.create_resource(node))
        for keyword in _REFERENCES:
            ref = node.get(keyword)
            if not isinstance(ref, str):
                continue
            try:
                resolved = resolver.lookup(ref)
            except Unresolvable:
                raise RefusedSchema(
                    f"has a {keyword} {quote(ref)!r} (at {quote(pointer)}) that does not point "
                    "inside the schema. Only references within it, such as #/$defs/name, are "
                    "followed; nothing is fetched."
                ) from None
            if isinstance(resolved.contents, dict):
                edges.append(id(resolved.contents))
                yield resolved.contents, f"{pointer}/{keyword}", resolved.resolver
        for keyword, value in node.items():
            at = f"{pointer}/{keyword}"
            if keyword == "pattern" and isinstance(value, str):
                _compile_pattern(value, at)
            elif keyword == "patternProperties" and isinstance(value, dict):
                self.has_pattern_properties = True
                for pattern in value:
                    _compile_pattern(pattern, at)
            elif keyword == "unevaluatedProperties":
                self.has_unevaluated_properties = True
            children = _subschemas(keyword, value)
            if keyword in _IN_PLACE_ONE + _IN_PLACE_LIST + _IN_PLACE_MAP:
                edges.extend(id(child) for _, child in children if isinstance(child, dict))
            for name, child in children:
                yield from self._visit(child, f"{at}{name}", resolver)

    def _refuse_cycles(self) -> None:
        """A loop of in-place references recurses forever without consuming the answer."""
        done: set[int] = set()
        for start in self.in_place:
            if start in done:
                continue
            path: list[int] = []
            on_path: set[int] = set()
            stack: list[tuple[int, Iterator[int]]] = [(start, iter(self.in_place.get(start, ())))]
            path.append(start)
            on_path.add(start)
            while stack:
                node, children = stack[-1]
                child = next(children, None)
                if child is None:
                    stack.pop()
                    path.pop()
                    on_path.discard(node)
                    done.add(node)
                elif child in on_path:
                    loop = path[path.index(child) :] + [child]
                    shown = " -> ".join(self.where.get(n, "?") for n in loop)
                    raise RefusedSchema(
                        f"has a $ref loop that never consumes any of the answer: {quote(shown)}. "
                        "Recursive schemas must go through properties or items."
                    )
                elif child not in done:
                    stack.append((child, iter(self.in_place.get(child, ()))))
                    path.append(child)
                    on_path.add(child)

    def _refuse_fan_out(self) -> None:
        """Chains of anyOf/$ref that double at each level cost 2**n checks per value."""
        limit = _limits()["max_schema_fanout"]
        cost: dict[int, int] = {}

        def applied(node: int) -> int:
            # Acyclic here (cycles were refused), and at most max_schema_depth deep per chain.
            if node not in cost:
                total = 1
                for child in self.in_place.get(node, ()):
                    total += applied(child)
                    if total > limit:
                        break
                cost[node] = total
            return cost[node]

        for node in self.in_place:
            if applied(node) > limit:
                raise RefusedSchema(
                    f"applies more than {limit} subschemas to one value at "
                    f"{quote(self.where[node])} through $ref, allOf, anyOf, oneOf, not or "
                    "if/then/else (STRUCTURED_OUTPUT__MAX_SCHEMA_FANOUT)."
                )


def _subschemas(keyword: str, value: Any) -> list[tuple[str, Any]]:
    """The subschemas under one keyword, with their pointer suffix."""
    if keyword in _IN_PLACE_ONE or (keyword in _PART_ONE and not isinstance(value, list)):
        return [("", value)]
    if keyword in _IN_PLACE_LIST + _PART_LIST and isinstance(value, list):
        return [(f"/{index}", item) for index, item in enumerate(value)]
    if keyword in _IN_PLACE_MAP + _PART_MAP + _DEFINITIONS and isinstance(value, dict):
        return [(f"/{name}", item) for name, item in value.items() if isinstance(item, dict)]
    return []


def _compile_pattern(pattern: str, where: str) -> None:
    try:
        _re2(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        raise RefusedSchema(
            f"has a pattern {quote(pattern)!r} (at {quote(where)}) that the gateway's "
            f"linear-time regex engine (RE2) does not accept: {quote(reason)}. Lookaround and "
            "backreferences are not supported."
        ) from None


# No captures needed, and no C++ log line on stderr that would repeat a refused pattern whole.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.never_capture = True


@functools.lru_cache(maxsize=256)
def _re2(pattern: str) -> re2._Regexp:
    return re2.compile(pattern, options=_RE2_OPTIONS)


# --- Answer time: validate within a budget ----------------------------------------------------


class _Deadline(threading.local):
    at: float = math.inf  # per thread: a validation thread sets it for the answer it checks


_deadline = _Deadline()


class _BudgetExceeded(Exception):
    pass


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not _re2(pattern).search(instance):
        yield ValidationError(f"{_short.repr(instance)} does not match {quote(pattern)!r}")


def _pattern_properties(validator, pattern_properties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        regex = _re2(pattern)
        for name, value in instance.items():
            if regex.search(name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(validator, additional, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = [_re2(pattern) for pattern in schema.get("patternProperties", {})]
    extras = [
        name
        for name in instance
        if name not in properties and not any(regex.search(name) for regex in patterns)
    ]
    if validator.is_type(additional, "object"):
        for name in extras:
            yield from validator.descend(instance[name], additional, path=name)
    elif not additional and extras:
        names = ", ".join(_short.repr(name) for name in sorted(extras)[:10])
        yield ValidationError(f"Additional properties are not allowed ({names} unexpected)")


def _hashable(value: Any) -> Any:
    """A hashable twin of a JSON value with JSON Schema's equality (1 == 1.0, true != 1)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ("array", tuple(_hashable(item) for item in value))
    return ("object", frozenset((key, _hashable(item)) for key, item in value.items()))


def _unique_items(validator, unique, instance, schema):
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _hashable(item)
        if key in seen:
            yield ValidationError(f"{_short.repr(instance)} has non-unique elements")
            return
        seen.add(key)


_SAFE_KEYWORDS = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}


def _on_budget(keyword_function):
    @functools.wraps(keyword_function)
    def checked(validator, value, instance, schema):
        if time.monotonic() > _deadline.at:
            raise _BudgetExceeded
        return keyword_function(validator, value, instance, schema)

    return checked


def _is_re2_regex(instance: object) -> bool:
    if isinstance(instance, str):
        _re2(instance)
    return True


@functools.cache
def _bounded_validator_class(base: Any) -> Any:
    """`base` with RE2 regexes, hashed uniqueItems, and a deadline check before every keyword."""
    safe = {name: f for name, f in _SAFE_KEYWORDS.items() if name in base.VALIDATORS}
    keywords = {**base.VALIDATORS, **safe}
    formats = jsonschema.FormatChecker(formats=())
    formats.checkers = dict(base.FORMAT_CHECKER.checkers)
    if "regex" in formats.checkers:  # `"format": "regex"` compiles the answer's strings
        formats.checkers["regex"] = (_is_re2_regex, (re2.error,))
    return jsonschema.validators.extend(
        base,
        {name: _on_budget(function) for name, function in keywords.items()},
        format_checker=formats,
    )


def check_output(text: str, response_format: dict) -> OutputCheck:
    """
    Check a model's answer against the requested JSON format. Raises `OutputCheckTooCostly`
    when the thread's deadline passes or the answer recurses too deeply to check.
    """
    candidate = text.strip()
    if len(candidate) > _limits()["max_answer_bytes"]:  # characters: a cheap bound before encoding
        return _invalid(
            text,
            f"The answer is {len(candidate)} characters long; answers up to "
            f"{_limits()['max_answer_bytes']} (STRUCTURED_OUTPUT__MAX_ANSWER_BYTES) are checked.",
        )
    fenced = _FENCE.match(candidate)
    if fenced:
        candidate = fenced.group(1).strip()
    try:
        parsed = orjson.loads(candidate)
    except orjson.JSONDecodeError as exc:
        return _invalid(text, f"Not valid JSON: {exc}")
    if not isinstance(parsed, dict):
        return _invalid(text, "Expected a JSON object.")
    if json_depth(parsed, _limits()["max_answer_depth"]) > _limits()["max_answer_depth"]:
        return _invalid(
            text,
            f"The answer nests more than {_limits()['max_answer_depth']} levels deep "
            "(STRUCTURED_OUTPUT__MAX_ANSWER_DEPTH).",
        )
    schema = schema_of(response_format)
    if schema is not None:
        validator_class = _bounded_validator_class(schema_validator_class(schema))  # type: ignore[arg-type]
        validator = validator_class(
            schema, registry=NO_RETRIEVAL, format_checker=validator_class.FORMAT_CHECKER
        )
        try:
            found = list(itertools.islice(validator.iter_errors(parsed), MAX_COLLECTED_ERRORS))
        except (_BudgetExceeded, RecursionError):
            raise OutputCheckTooCostly(
                "The answer could not be checked against the schema within the validation "
                f"budget ({_limits()['validation_seconds']:g} s, "
                "STRUCTURED_OUTPUT__VALIDATION_SECONDS). Simplify the schema."
            ) from None
        except Unresolvable as exc:  # inspect_schema makes this unreachable; never a 500
            found = [ValidationError(f"A reference in the schema does not resolve: {exc}")]
        if found:
            found.sort(key=lambda error: [str(part) for part in error.absolute_path])
            errors = [
                {"path": quote(error.json_path), "message": quote(error.message)}
                for error in found[:MAX_REPORTED_ERRORS]
            ]
            return OutputCheck(False, candidate, parsed=parsed, errors=errors)
    return OutputCheck(True, candidate, parsed=parsed)


def _invalid(text: str, message: str) -> OutputCheck:
    return OutputCheck(False, text, errors=[{"path": "$", "message": message}])


def _validation_pool() -> ThreadPoolExecutor:
    state = _state()
    with state.lock:
        if state.pool is None:
            state.pool = ThreadPoolExecutor(
                max_workers=state.limits["validation_threads"], thread_name_prefix="output-check"
            )
        return state.pool


def _check_within(seconds: float, text: str, response_format: dict) -> OutputCheck:
    _deadline.at = time.monotonic() + seconds
    try:
        return check_output(text, response_format)
    finally:
        _deadline.at = math.inf


async def check_output_off_loop(
    text: str, response_format: dict, *, seconds: float | None = None
) -> OutputCheck:
    """
    `check_output` in the validation threads, with a deadline of `seconds`
    (STRUCTURED_OUTPUT__VALIDATION_SECONDS): the event loop stays free while it runs, and a
    check that runs out of time raises `OutputCheckTooCostly` (a 502).
    """
    seconds = _limits()["validation_seconds"] if seconds is None else seconds
    loop = asyncio.get_running_loop()
    work = loop.run_in_executor(_validation_pool(), _check_within, seconds, text, response_format)
    try:
        # The deadline inside ends the check; this bounds the wait for a free thread as well.
        async with asyncio.timeout(2 * seconds + 1):
            return await work
    except TimeoutError:
        raise OutputCheckTooCostly(
            "The answer could not be checked against the schema in time: the gateway's "
            "validation threads are busy (STRUCTURED_OUTPUT__VALIDATION_THREADS)."
        ) from None


def describe_errors(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{error['path']}: {error['message']}" for error in errors)


def repair_messages(
    messages: list[dict[str, Any]], *, output: str, check: OutputCheck, response_format: dict
) -> list[dict[str, Any]]:
    """The conversation again, with the invalid answer and what is wrong with it."""
    instruction = (
        "Your previous answer is not valid. Errors: "
        f"{describe_errors(check.errors)}. Reply with only the corrected JSON object"
    )
    schema = schema_of(response_format)
    if schema is not None:
        instruction += " that follows this JSON Schema: " + orjson.dumps(schema).decode()
    return [
        *messages,
        {"role": "assistant", "content": output},
        {"role": "user", "content": instruction + "."},
    ]


def schema_prompt_format(response_format: dict, messages: list[dict[str, Any]]):
    """
    The fallback for servers that refuse `json_schema`: plain JSON mode, and the schema in a
    system message. Returns (response_format, messages).
    """
    schema = orjson.dumps(schema_of(response_format)).decode()
    system = {
        "role": "system",
        "content": "Answer with a single JSON object that follows this JSON Schema exactly, and "
        f"nothing else: {schema}",
    }
    return {"type": "json_object"}, [system, *messages]
