"""
The gateway's Prometheus metrics and the typed calls that record them.

Names follow the OpenTelemetry GenAI semantic conventions where one exists (in Prometheus form:
dots become underscores and the unit is suffixed, e.g. `gen_ai_server_time_to_first_token_seconds`),
with their attribute names as labels (`gen_ai_request_model`, `gen_ai_operation_name`,
`gen_ai_token_type`). Everything else is `llmapi_*` and labelled `model`.

Labels stay bounded whatever clients send: a model is a catalog name (anything else is
"unknown"), a status is a class (2xx, 4xx, 5xx), a replica is `scheme://host:port` (never a
path, query or credentials), and every other label keeps at most a fixed number of distinct
values per process (the rest become "other"). Key ids appear only when opted in.

Every record call is a few dictionary look-ups plus the metric updates: the labelled children
are cached here, because prometheus_client's `labels()` validates and locks on every call.

This module does not import Django: worker processes, benchmarks and tests use it directly, and
`observability.apps` configures it from the settings.

Multiprocess mode: prometheus_client keeps values in memory-mapped files when
PROMETHEUS_MULTIPROC_DIR is set *before it is first imported* (see `observability.multiprocess`);
otherwise in this process's memory. `MULTIPROCESS` says which one this process got.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable
from functools import lru_cache
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client import values as _prometheus_values

from infra.runtime import get_runtime

# Decided by prometheus_client at its import time; read its decision rather than the
# environment, which may have changed since.
MULTIPROCESS: bool = _prometheus_values.ValueClass is not _prometheus_values.MutexValue
MULTIPROCESS_DIR: str | None = os.environ.get("PROMETHEUS_MULTIPROC_DIR") if MULTIPROCESS else None

# `*_created` series double the series count for a start time Prometheus does not need, and
# multiprocess mode cannot export them: leave them out in both modes alike.
disable_created_metrics()

UNKNOWN = "unknown"
OTHER = "other"
NO_TEAM = "none"

# The metrics of this process. Scrapes in multiprocess mode read the files instead.
REGISTRY = CollectorRegistry(auto_describe=True)

# Bucket boundaries recommended by the GenAI semantic conventions.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)  # fmt: skip
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)  # fmt: skip
# The gateway's own share of a request is sub-millisecond when healthy; resolve that range.
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

GENAI_LABELS = ("gen_ai_operation_name", "gen_ai_request_model", "endpoint")

REQUESTS = Counter(
    "llmapi_requests",
    "Requests answered, by model, endpoint, status class and team.",
    ("model", "endpoint", "status_class", "team", "key"),
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "gen_ai_server_request_duration",
    "End-to-end request latency, from the request reaching the gateway to the last byte.",
    GENAI_LABELS,
    unit="seconds",
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "gen_ai_server_time_to_first_token",
    "Time from the request reaching the gateway to the first token (successful responses).",
    GENAI_LABELS,
    unit="seconds",
    buckets=TTFT_BUCKETS,
    registry=REGISTRY,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "gen_ai_server_time_per_output_token",
    "Time per output token after the first one (successful responses).",
    GENAI_LABELS,
    unit="seconds",
    buckets=TPOT_BUCKETS,
    registry=REGISTRY,
)
GATEWAY_OVERHEAD = Histogram(
    "llmapi_gateway_overhead",
    "Latency the gateway itself adds: end-to-end latency minus upstream time and queue wait.",
    ("model", "endpoint"),
    unit="seconds",
    buckets=OVERHEAD_BUCKETS,
    registry=REGISTRY,
)
TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens per request, by token type (input: the prompt, output: the completion).",
    ("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"),
    buckets=TOKEN_BUCKETS,
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "llmapi_in_flight_requests",
    "Requests being served now, by model (summed over live workers).",
    ("model",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
QUEUE_LENGTH = Gauge(
    "llmapi_queue_length",
    "Requests waiting for a concurrency slot of their model now, by team and priority class "
    "(summed over live workers).",
    ("model", "team", "priority"),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "llmapi_queue_wait",
    "Time a request waited for a free concurrency slot of its model, by team and priority class.",
    ("model", "team", "priority"),
    unit="seconds",
    buckets=QUEUE_BUCKETS,
    registry=REGISTRY,
)
GC_PAUSE = Histogram(
    "llmapi_gc_pause",
    "Time the cycle collector stopped the process, by generation collected.",
    ("generation",),
    unit="seconds",
    buckets=OVERHEAD_BUCKETS,
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "llmapi_rate_limited",
    "Requests refused with 429, by cause (model_slots, key_quota, team_quota).",
    ("cause", "model", "team", "key"),
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "llmapi_upstream_errors",
    "Failed attempts against a model server replica, by kind of failure.",
    ("model", "replica", "kind"),
    registry=REGISTRY,
)
UPSTREAM_RETRIES = Counter(
    "llmapi_upstream_retries",
    "Attempts retried after a replica failed before the first byte.",
    ("model", "replica"),
    registry=REGISTRY,
)
REPLICA_EJECTIONS = Counter(
    "llmapi_replica_ejections",
    "Times a replica was taken out of rotation after failures in a row.",
    ("model", "replica"),
    registry=REGISTRY,
)
STRUCTURED_OUTPUT = Counter(
    "llmapi_structured_output",
    "Structured-output answers by outcome: valid at once, repaired, or failed.",
    ("model", "outcome"),
    registry=REGISTRY,
)
LEDGER_QUEUE_DEPTH = Gauge(
    "llmapi_usage_ledger_queue_depth",
    "Usage records waiting to be written (summed over live workers).",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
LEDGER_DROPS = Counter(
    "llmapi_usage_ledger_dropped",
    "Usage records dropped because the ledger queue was full.",
    registry=REGISTRY,
)
EMBEDDED_TOKENS_PER_SECOND = Gauge(
    "llmapi_embedded_model_tokens_per_second",
    "Generation speed of the embedded model's most recent answer.",
    ("model",),
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)

BATCH_LINES = Counter(
    "llmapi_batch_lines",
    "Batch lines by outcome: completed, failed, retried (a model server failure, or the model "
    "or the key's tokens per minute busy), preempted (its model slot taken by interactive work; "
    "it runs again) or lost (its lease passed to another process).",
    ("outcome",),
    registry=REGISTRY,
)
BATCH_LINES_RUNNING = Gauge(
    "llmapi_batch_lines_running",
    "Batch lines running (summed over live workers).",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
BATCHES_ENDED = Counter(
    "llmapi_batches_ended",
    "Batches ended, by final status (completed, failed, cancelled, expired).",
    ("status",),
    registry=REGISTRY,
)

RATE_LIMIT_CAUSES = frozenset({"model_slots", "key_quota", "team_quota"})
PRIORITIES = frozenset({"interactive", "batch"})
STRUCTURED_OUTCOMES = frozenset({"valid", "repaired", "failed"})
BATCH_LINE_OUTCOMES = frozenset({"completed", "failed", "retried", "preempted", "lost"})
BATCH_STATUSES = frozenset({"completed", "failed", "cancelled", "expired"})
_STATUS_CLASSES = {100: "1xx", 200: "2xx", 300: "3xx", 400: "4xx", 500: "5xx"}


class _BoundedValues:
    """Passes at most `limit` distinct label values; any further one becomes "other"."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class MetricsState:
    """The runtime's recording options, read from METRICS when built (`configure()` changes them)."""

    __slots__ = ("enabled", "key_labels")
    SETTINGS = ("METRICS",)

    def __init__(self) -> None:
        options = settings.METRICS
        # Recording costs nothing when nobody can read the metrics.
        self.enabled = bool(options["token"] or options["port"])
        self.key_labels: bool = options["key_labels"]


class ModelLabels:
    """
    The model names that may appear as labels: the catalog's names known from the settings
    when built; the model catalog adds the rest (e.g. the embedded model's name) with
    register_models(). Names are only added, as catalogs are reloaded.
    """

    __slots__ = ("names",)

    def __init__(self) -> None:
        self.names: frozenset[str] = frozenset(
            name
            for spec in getattr(settings, "LLMAPI_MODELS", {}).values()
            if (name := spec.get("model_name", ""))
        )


def _state() -> MetricsState:
    return get_runtime().part(MetricsState)


# The series and their bounded label values mirror prometheus_client's registry, which is
# process-wide by nature: they stay with it, not with the runtime.
_endpoints = _BoundedValues(64)
_teams = _BoundedValues(500)
_keys = _BoundedValues(2000)
_replicas = _BoundedValues(200)
_kinds = _BoundedValues(32)
_operations = _BoundedValues(16)
_children: dict[tuple[Any, ...], Any] = {}


def configure(
    *,
    enabled: bool | None = None,
    key_labels: bool | None = None,
    models: Iterable[str] | None = None,
) -> None:
    """Turn recording on or off, opt in to key-id labels, and name the catalog's models."""
    state = _state()
    if enabled is not None:
        state.enabled = enabled
    if key_labels is not None:
        state.key_labels = key_labels
    if models is not None:
        get_runtime().part(ModelLabels).names = frozenset(models)


def recording() -> bool:
    """Whether metrics are recorded (they are when someone can read them)."""
    return _state().enabled


def register_models(names: Iterable[str]) -> None:
    """Add catalog model names; only these (and "unknown") ever appear as a model label."""
    labels = get_runtime().part(ModelLabels)
    labels.names = labels.names | frozenset(name for name in names if name)


def model_label(name: str | None) -> str:
    return name if name is not None and name in get_runtime().part(ModelLabels).names else UNKNOWN


def status_class(status: int) -> str:
    return _STATUS_CLASSES.get(status // 100 * 100, OTHER)


@lru_cache(maxsize=512)
def _replica_from_url(url: str) -> str:
    try:
        parts = urlsplit(url if "//" in url else f"//{url}")
        host = parts.hostname
        port = parts.port
    except ValueError:
        return UNKNOWN
    if not host:
        return UNKNOWN
    scheme = parts.scheme.lower() or "http"
    if port is None:
        port = 443 if scheme == "https" else 80
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def replica_label(url: str) -> str:
    """`scheme://host:port` of a replica's base URL: no path, query or credentials."""
    return _replicas(_replica_from_url(url))


def _team(team: str | None) -> str:
    return _teams(team) if team else NO_TEAM


def _key(key_id: str | None) -> str:
    # An empty label value is the same as no label to Prometheus.
    return _keys(key_id) if key_id and _state().key_labels else ""


def _child(metric: Any, *labels: str) -> Any:
    cache_key = (metric, *labels)
    child = _children.get(cache_key)
    if child is None:
        child = _children[cache_key] = metric.labels(*labels)
    return child


class _RequestSeries(NamedTuple):
    duration: Any
    overhead: Any
    ttft: Any
    per_token: Any
    input_tokens: Any
    output_tokens: Any


_request_series_cache: dict[tuple[str, str, str], _RequestSeries] = {}


def _request_series(operation: str, model: str, endpoint: str) -> _RequestSeries:
    """The histogram children one request updates, looked up once per request."""
    key = (operation, model, endpoint)
    series = _request_series_cache.get(key)
    if series is None:
        series = _request_series_cache[key] = _RequestSeries(
            REQUEST_DURATION.labels(operation, model, endpoint),
            GATEWAY_OVERHEAD.labels(model, endpoint),
            TIME_TO_FIRST_TOKEN.labels(operation, model, endpoint),
            TIME_PER_OUTPUT_TOKEN.labels(operation, model, endpoint),
            TOKEN_USAGE.labels(operation, model, "input"),
            TOKEN_USAGE.labels(operation, model, "output"),
        )
    return series


def record_request(
    *,
    model: str | None,
    endpoint: str,
    status: int,
    duration: float,
    team: str | None = None,
    key_id: str | None = None,
    ttft: float | None = None,
    upstream_seconds: float | None = None,
    queue_seconds: float = 0.0,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    operation: str = "chat",
) -> None:
    """
    Record one answered request. Call it once, when the last byte has gone out.

    `endpoint` is the route's name (never the raw path), `duration` the end-to-end seconds,
    `ttft` the seconds to the first token, `upstream_seconds` the time spent waiting on model
    servers and `queue_seconds` the wait for a concurrency slot (both left out of the overhead).
    """
    if _gc_pauses:
        record_gc_pauses()
    if not _state().enabled:
        return
    model_name = model_label(model)
    endpoint = _endpoints(endpoint)
    klass = status_class(status)
    _child(REQUESTS, model_name, endpoint, klass, _team(team), _key(key_id)).inc()
    series = _request_series(_operations(operation), model_name, endpoint)
    series.duration.observe(duration)
    if upstream_seconds is not None:
        overhead = duration - upstream_seconds - queue_seconds
        series.overhead.observe(overhead if overhead > 0 else 0.0)
    if klass == "2xx" and ttft is not None:
        series.ttft.observe(ttft)
        if completion_tokens is not None and completion_tokens > 1:
            per_token = (duration - ttft) / (completion_tokens - 1)
            series.per_token.observe(per_token if per_token > 0 else 0.0)
    if prompt_tokens is not None:
        series.input_tokens.observe(prompt_tokens)
    if completion_tokens is not None:
        series.output_tokens.observe(completion_tokens)


class _Held:
    """A gauge raised by one while the block runs (nothing when metrics are off)."""

    __slots__ = ("_gauge",)

    _gauge: Any

    def __enter__(self) -> None:
        if self._gauge is not None:
            self._gauge.inc()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._gauge is not None:
            self._gauge.dec()


class in_flight(_Held):  # noqa: N801  (used like a function: `with in_flight(model): ...`)
    """Counts a request as in flight for its model while the block runs."""

    __slots__ = ()

    def __init__(self, model: str | None) -> None:
        self._gauge = _child(IN_FLIGHT, model_label(model)) if _state().enabled else None


def _priority(priority: str | None) -> str:
    return priority if priority in PRIORITIES else OTHER


def record_queue_wait(
    model: str | None, seconds: float, team: str | None = None, priority: str = "interactive"
) -> None:
    if _state().enabled:
        _child(QUEUE_WAIT, model_label(model), _team(team), _priority(priority)).observe(seconds)


class queued(_Held):  # noqa: N801  (used like a function: `with queued(model, team, priority): ...`)
    """Counts a request as waiting for a slot of its model while the block runs."""

    __slots__ = ()

    def __init__(self, model: str | None, team: str | None, priority: str) -> None:
        self._gauge = (
            _child(QUEUE_LENGTH, model_label(model), _team(team), _priority(priority))
            if _state().enabled
            else None
        )


# A collection can start inside any allocation, including one made while prometheus_client holds
# its (non-reentrant) value lock: observing from the collector's callback would then wait on that
# lock forever. The callback only appends here (no lock); requests and scrapes record the pauses.
_gc_pauses: deque[tuple[int, float]] = deque(maxlen=4096)


# The collector and its callbacks are process-wide: so is the start of the collection under way.
_collection_started = 0.0


def time_collection(phase: str, info: dict[str, Any]) -> None:
    """A `gc.callbacks` hook: notes each collection's pause, taking no lock."""
    global _collection_started
    if phase == "start":
        _collection_started = time.perf_counter()
    else:
        _gc_pauses.append((info["generation"], time.perf_counter() - _collection_started))


def record_gc_pauses() -> None:
    """Observe the pauses noted since the last call (at the end of a request, before a scrape)."""
    for _ in range(len(_gc_pauses)):  # not those that recording itself causes: no endless loop
        try:
            generation, seconds = _gc_pauses.popleft()
        except IndexError:  # another thread took the last one
            return
        if _state().enabled:
            _child(GC_PAUSE, str(generation)).observe(seconds)


def record_rate_limited(
    cause: str, model: str | None, team: str | None = None, key_id: str | None = None
) -> None:
    """A 429; `cause` is one of model_slots, key_quota, team_quota."""
    if _state().enabled:
        cause = cause if cause in RATE_LIMIT_CAUSES else OTHER
        _child(RATE_LIMITED, cause, model_label(model), _team(team), _key(key_id)).inc()


def record_upstream_error(model: str | None, replica: str, kind: str) -> None:
    """A failed attempt; `replica` is the replica's base URL, `kind` a short fixed word."""
    if _state().enabled:
        _child(UPSTREAM_ERRORS, model_label(model), replica_label(replica), _kinds(kind)).inc()


def record_retry(model: str | None, replica: str) -> None:
    if _state().enabled:
        _child(UPSTREAM_RETRIES, model_label(model), replica_label(replica)).inc()


def record_ejection(model: str | None, replica: str) -> None:
    if _state().enabled:
        _child(REPLICA_EJECTIONS, model_label(model), replica_label(replica)).inc()


def record_structured_output(model: str | None, outcome: str) -> None:
    """`outcome` is valid, repaired or failed."""
    if _state().enabled:
        outcome = outcome if outcome in STRUCTURED_OUTCOMES else OTHER
        _child(STRUCTURED_OUTPUT, model_label(model), outcome).inc()


def set_ledger_queue_depth(depth: int) -> None:
    if _state().enabled:
        LEDGER_QUEUE_DEPTH.set(depth)


def record_ledger_drop(count: int = 1) -> None:
    if _state().enabled:
        LEDGER_DROPS.inc(count)


def record_embedded_tokens_per_second(model: str | None, value: float) -> None:
    if _state().enabled:
        _child(EMBEDDED_TOKENS_PER_SECOND, model_label(model)).set(value)


def record_batch_line(outcome: str) -> None:
    """`outcome` is completed, failed, retried, preempted or lost."""
    if _state().enabled:
        _child(BATCH_LINES, outcome if outcome in BATCH_LINE_OUTCOMES else OTHER).inc()


def set_batch_lines_running(count: int) -> None:
    if _state().enabled:
        BATCH_LINES_RUNNING.set(count)


def record_batch_ended(status: str) -> None:
    if _state().enabled:
        _child(BATCHES_ENDED, status if status in BATCH_STATUSES else OTHER).inc()
