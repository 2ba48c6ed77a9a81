"""
Reading each replica's load from the model server itself, on an interval, off the request path.

Where a server publishes its load, routing balances on it (every gateway process's requests,
and anyone else's, are in it) rather than on this process's own in-flight count alone:

* vLLM `/metrics`: `vllm:num_requests_running`, `vllm:num_requests_waiting`,
  `vllm:kv_cache_usage_perc` (`vllm:gpu_cache_usage_perc` before v0.10);
* llama.cpp's server `/metrics` (with `--metrics`): `llamacpp:requests_processing`,
  `llamacpp:requests_deferred`, `llamacpp:kv_cache_usage_ratio`; or else its `/slots`
  (on by default): the slots that are processing;
* another llmapi: `llmapi_in_flight_requests`.

A server that publishes none of these (llama-cpp-python's server, Ollama, OpenAI) is asked
again every `UNSUPPORTED_RETRY_SECONDS`; meanwhile, and whenever a reading is older than a few
intervals, routing uses the gateway's own in-flight count. One task per worker process reads
every replica of every model that routes by load, all replicas at once, each with a short
timeout and a bounded body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx
import orjson
from django.conf import settings

from inference.backends.openai_http import OpenAICompatibleBackend, Replica, send
from inference.registry import get_registry
from inference.routing import ReplicaLoad, ServerLoad
from infra.runtime import get_runtime

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024  # a vLLM /metrics page is ~100 KB
UNSUPPORTED_RETRY_SECONDS = 60.0
TIMEOUT = httpx.Timeout(2.0, connect=1.0)

# Metric name -> (what it measures, the server it comes from).
METRICS = {
    "vllm:num_requests_running": ("running", "vllm"),
    "vllm:num_requests_waiting": ("waiting", "vllm"),
    "vllm:kv_cache_usage_perc": ("kv", "vllm"),
    "vllm:gpu_cache_usage_perc": ("kv", "vllm"),
    "llamacpp:requests_processing": ("running", "llama.cpp metrics"),
    "llamacpp:requests_deferred": ("waiting", "llama.cpp metrics"),
    "llamacpp:kv_cache_usage_ratio": ("kv", "llama.cpp metrics"),
    "llmapi_in_flight_requests": ("running", "llmapi"),
}


def parse_metrics(text: str) -> ServerLoad | None:
    """The load in a Prometheus text page, or None when it has none of `METRICS`."""
    values: dict[str, float] = {}
    source = ""
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=-1)
        known = METRICS.get(line[:end]) if end > 0 else None
        if known is None:
            continue
        what, source = known
        rest = line[line.rindex("}") + 1 :] if "}" in line else line[end:]
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        if value != value:  # NaN
            continue
        # Several models or label sets on one server: requests add up, the cache is the fullest.
        values[what] = (
            max(values.get(what, 0.0), value) if what == "kv" else (values.get(what, 0.0) + value)
        )
    if "running" not in values and "waiting" not in values:
        return None
    return ServerLoad(
        running=values.get("running", 0.0),
        waiting=values.get("waiting", 0.0),
        kv_cache_usage=values.get("kv"),
        source=source,
    )


def parse_slots(data: Any) -> ServerLoad | None:
    """The load in llama.cpp's `/slots` answer: one entry per slot."""
    if not isinstance(data, list) or not all(isinstance(slot, dict) for slot in data):
        return None
    busy = 0
    for slot in data:
        if "is_processing" in slot:
            busy += bool(slot["is_processing"])
        elif "state" in slot:  # older servers: 0 idle, 1 processing
            busy += slot["state"] != 0
        else:
            return None
    return ServerLoad(running=float(busy), waiting=0.0, source="llama.cpp slots")


def describe(load: ReplicaLoad) -> dict[str, Any]:
    """The server-reported part of a replica's load, for /readyz."""
    if load.server is None:
        return {}
    reported: dict[str, Any] = {
        "server_load": {
            "running": load.server.running,
            "waiting": load.server.waiting,
            "source": load.server.source,
            "age_seconds": round(time.monotonic() - load.read_at, 1),
        }
    }
    if load.server.kv_cache_usage is not None:
        reported["server_load"]["kv_cache_usage"] = load.server.kv_cache_usage
    return reported


# --- Reading ----------------------------------------------------------------------------------


class _Unsupported:
    """Replicas that publish no load, and when to ask them again."""

    def __init__(self) -> None:
        self.until: dict[str, float] = {}

    def skip(self, replica: Replica, now: float) -> bool:
        return self.until.get(replica.base_url, 0.0) > now

    def mark(self, replica: Replica, now: float) -> None:
        self.until[replica.base_url] = now + UNSUPPORTED_RETRY_SECONDS


def _root(replica: Replica) -> httpx.URL:
    """The server's root: `/metrics` and `/slots` sit beside `/v1`, not under it."""
    path = replica.url.path.removesuffix("/chat/completions").removesuffix("/v1")
    return replica.url.copy_with(path=path.rstrip("/") or "/")


async def _get(backend: OpenAICompatibleBackend, replica: Replica, path: str) -> bytes | None:
    root = _root(replica)
    url = root.copy_with(path=root.path.rstrip("/") + path)
    headers = {**backend._replica_headers(replica), "Accept": "text/plain, application/json"}  # noqa: SLF001
    request = httpx.Request("GET", url, headers=headers, extensions={"timeout": TIMEOUT.as_dict()})
    response = await send(request, stream=True, transport=backend._transport)  # noqa: SLF001
    try:
        if response.status_code != 200:
            return None
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return None
        return bytes(body)
    finally:
        await response.aclose()


async def read_load(backend: OpenAICompatibleBackend, replica: Replica) -> ServerLoad | None:
    """The replica's load as its server publishes it, or None (it publishes none, or failed)."""
    now = time.monotonic()
    unsupported = get_runtime().part(LoadPollerState).unsupported
    if unsupported.skip(replica, now):
        return None
    try:
        page = await _get(backend, replica, "/metrics")
        load = parse_metrics(page.decode("utf-8", "replace")) if page is not None else None
        if load is None:
            slots = await _get(backend, replica, "/slots")
            if slots is not None:
                with contextlib.suppress(orjson.JSONDecodeError):
                    load = parse_slots(orjson.loads(slots))
    except httpx.HTTPError:
        return None  # down: health and ejection deal with that, not the load reading
    if load is None:
        unsupported.mark(replica, now)
    return load


async def read_all() -> None:
    """One reading of every replica of every model that balances on load."""
    readings = []
    for backend in get_registry().backends().values():
        if not isinstance(backend, OpenAICompatibleBackend):
            continue
        pool = backend.pool
        if len(pool.replicas) < 2 or pool.mode == "round_robin":
            continue
        readings += [(backend, replica) for replica in pool.replicas]
    loads = await asyncio.gather(*(read_load(b, r) for b, r in readings))
    now = time.monotonic()
    for (_, replica), load in zip(readings, loads, strict=True):
        if load is not None:
            replica.load.observe(load, now)


# --- The background task ----------------------------------------------------------------------


class LoadPollerState:
    """The runtime's background task reading the model servers' load, and who has none."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.unsupported = _Unsupported()


def start() -> None:
    """Start reading loads in the background on this event loop (at server start-up)."""
    state = get_runtime().part(LoadPollerState)
    interval = settings.ROUTING["scrape_seconds"]
    if interval <= 0 or (state.task is not None and not state.task.done()):
        return
    state.task = asyncio.get_running_loop().create_task(
        _read_forever(interval), name="inference-replica-load"
    )


async def stop() -> None:
    state = get_runtime().part(LoadPollerState)
    task, state.task = state.task, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _read_forever(interval: float) -> None:
    while True:
        try:
            await read_all()
        except Exception:  # a bug here must not end the readings for the process's life
            logger.exception("Reading the model servers' load failed")
        await asyncio.sleep(interval)
