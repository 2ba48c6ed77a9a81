"""
The one module that speaks HTTP to model servers.

Any OpenAI-compatible server works: vLLM, llama.cpp's server, Ollama, OpenAI itself. All
requests go through one long-lived connection pool per event loop, httpx's aiohttp transport
(measurably faster than httpx's default one), with every timeout set explicitly.

A model may have several servers (replicas): requests go where `inference.routing` places
them (by default where their prompt's prefix is cached, within a bound on load), failing
replicas are skipped for a while, and connection failures and 429/502/503/504 are retried on
another replica while no byte has reached the client.

`OpenAICompatibleBackend` exposes the interface the services use for any model, local or
remote:

* `await backend.create(payload)` returns the server's `chat.completion` object;
* `async with backend.stream(payload) as chunks:` checks the status first, then yields the
  `chat.completion.chunk` objects as they arrive. Leaving the block closes the upstream
  request at once, which is how a client disconnect reaches the model server.

Failures are raised as the `UpstreamError` family from `inference.exceptions`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import itertools
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import httpx
import orjson
from django.conf import settings
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import AiohttpResponseStream, map_aiohttp_exceptions
from httpx_sse import EventSource, SSEError

from inference import routing
from inference.catalog import ModelSpec
from inference.exceptions import (
    ContextLengthExceeded,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from infra.runtime import get_runtime
from limits import replica_health
from observability import metrics, timing

logger = logging.getLogger(__name__)

# The server that answered the request being handled (for the usage ledger): set when a
# replica's answer is accepted, in the task that awaited it.
answered_replica: contextvars.ContextVar[str] = contextvars.ContextVar(
    "answered_replica", default=""
)

MAX_ERROR_MESSAGE_CHARS = 500
USER_AGENT = "llmapi"


class ChatBackend(Protocol):
    # Set once a server refused `response_format: json_schema` (JSON_SCHEMA_MODE=auto).
    refuses_native_schema: bool

    async def create(self, payload: dict[str, Any]) -> dict[str, Any]: ...

    def stream(
        self, payload: dict[str, Any]
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]: ...


# --- The shared client ---------------------------------------------------------------------


class Transport(AiohttpTransport):
    """httpx's aiohttp transport, plus a whole-answer call that reads the body in one piece."""

    async def handle_whole_request(self, request: httpx.Request) -> httpx.Response:
        """
        As `handle_async_request` then `aread()`, without httpx's chunk-by-chunk stream over
        aiohttp's (a few percent of a request's CPU): the body is read with one call and the
        connection released. The same exceptions (httpx's) come out.
        """
        response = await self.handle_async_request(request)
        stream = response.stream
        if not isinstance(stream, AiohttpResponseStream):  # pragma: no cover (the same class)
            await response.aread()
            return response
        raw = stream._aiohttp_response
        try:
            with map_aiohttp_exceptions():
                body = await raw.read()
        finally:
            raw.release()
        # `content=` decodes a Content-Encoding the same way `aread()` would.
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers.raw,
            content=body,
            request=request,
            extensions=response.extensions,
        )


class TransportState:
    """The runtime's connection pools to the model servers, one per event loop."""

    def __init__(self) -> None:
        self.transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Transport]
        self.transports = weakref.WeakKeyDictionary()


def get_transport() -> Transport:
    """
    This event loop's shared connection pool, created on first use: httpx's aiohttp transport,
    used directly (`handle_async_request`). The gateway builds each request itself, so an
    `httpx.AsyncClient` on top would only add its per-request work (merging defaults, a
    cookie jar, auth and redirect hooks: about a tenth of a request's CPU in profiles).
    """
    loop = asyncio.get_running_loop()
    transports = get_runtime().part(TransportState).transports
    transport = transports.get(loop)
    if transport is None:
        transport = transports[loop] = Transport(client=_new_session)
    return transport


def _new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000),
        # A model server's cookies must not travel from one caller's request to the next.
        cookie_jar=aiohttp.DummyCookieJar(),
        # Proxies from the environment are not consulted: a gateway talks to its model
        # servers directly.
        trust_env=False,
    )


async def send(
    request: httpx.Request,
    *,
    stream: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.Response:
    """Send `request`; unless `stream`, with the whole body read (and the connection freed)."""
    transport = transport or get_transport()
    if not stream and isinstance(transport, Transport):
        return await transport.handle_whole_request(request)
    response = await transport.handle_async_request(request)
    if not stream:
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
    return response


async def close_transports() -> None:
    """Close this event loop's connection pool (called on server shutdown)."""
    transport = get_runtime().part(TransportState).transports.pop(asyncio.get_running_loop(), None)
    if transport is not None:
        await transport.aclose()


def chat_completions_url(base_url: str) -> str:
    """`http://host:8000` and `http://host:8000/v1` both mean `http://host:8000/v1/...`."""
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


def split_credentials(base_url: str) -> tuple[str, str | None]:
    """
    `http://user:pass@host/v1` -> (`http://host/v1`, an HTTP Basic `Authorization` value).
    Credentials stay out of the URL so that no log line or error message can show them.
    """
    parts = urlsplit(base_url)
    if "@" not in parts.netloc:
        return base_url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=hostport)), f"Basic {token}"


def public_location(base_url: str) -> str:
    """The server's address without credentials or path, safe to show in an error."""
    try:
        url = httpx.URL(base_url)
        return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
    except httpx.InvalidURL:
        return "the configured address"


# --- Replicas --------------------------------------------------------------------------------


@dataclass(eq=False)
class Replica:
    """One server of a model, and what routing knows of its load."""

    base_url: str
    url: httpx.URL
    location: str
    authorization: str | None = None  # HTTP Basic, from credentials in BASE_URL
    load: routing.ReplicaLoad = field(default_factory=routing.ReplicaLoad)

    @property
    def in_flight(self) -> int:
        return self.load.in_flight


class ReplicaPool:
    """
    A model's servers and the choice among them (`inference.routing`: prefix-aware,
    least-busy or round-robin, per the catalog), with outlier ejection like Envoy's: a replica
    that fails `eject_after` times in a row is skipped for `eject_seconds`, then tried again;
    one more failure ejects it again, one success restores it. Health is recorded in one place,
    `limits.replica_health` (per process, or shared by every process through Redis).
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.replicas = []
        for base_url in spec.servers:
            base, authorization = split_credentials(base_url)
            self.replicas.append(
                Replica(
                    base,
                    httpx.URL(chat_completions_url(base)),
                    public_location(base),
                    authorization=authorization,
                )
            )
        self.mode = spec.routing_mode
        self.placements = routing.PlacementTable(
            spec.name,
            keep_seconds=settings.ROUTING["placement_seconds"],
            max_entries=settings.ROUTING["max_placements"],
        )
        self.load_factor: float = settings.ROUTING["load_factor"]
        self.fresh_for = routing.FRESH_INTERVALS * settings.ROUTING["scrape_seconds"]
        self._turn = itertools.count()

    async def choose(
        self, *, prefixes: Sequence[str] = (), avoid: Collection[Replica] = ()
    ) -> Replica:
        """
        The replica for the next attempt: among the healthy ones not in `avoid` (all of them
        when none is left), by the model's routing policy. `prefixes` are the request's
        `routing.prefix_keys`; with `prefix` routing they are placed on the chosen replica.
        """
        healthy = [r for r in self.replicas if not self.ejected(r)]
        candidates = [r for r in healthy if r not in avoid] or healthy or self.replicas
        if len(candidates) == 1:
            chosen = candidates[0]
        elif self.mode == "round_robin":
            chosen = candidates[next(self._turn) % len(candidates)]
        else:
            now = time.monotonic()
            loads = [r.load.current(now, fresh_for=self.fresh_for) for r in candidates]
            if self.mode == "prefix" and prefixes:
                index, _ = routing.place(
                    [r.location for r in candidates],
                    loads,
                    anchor=prefixes[-1],
                    holder=await self.placements.holder(prefixes),
                    load_factor=self.load_factor,
                )
                chosen = candidates[index]
            else:
                # Rotate before taking the minimum, so equally loaded replicas share the traffic.
                start = next(self._turn) % len(candidates)
                order = list(range(start, len(candidates))) + list(range(start))
                chosen = candidates[min(order, key=lambda i: loads[i])]
        if self.mode == "prefix" and prefixes and len(self.replicas) > 1:
            self.placements.record(routing.recorded_keys(prefixes), chosen.location)
        return chosen

    def ejected(self, replica: Replica) -> bool:
        """Whether the replica is skipped now (never, for a model with one server)."""
        if len(self.replicas) < 2:
            return False
        return replica_health.is_ejected(self.spec.name, replica.location)

    async def succeeded(self, replica: Replica) -> None:
        if len(self.replicas) < 2:
            return
        if self.ejected(replica):
            logger.info("%s server %s is healthy again", self.spec.label, replica.location)
        await replica_health.succeeded(self.spec.name, replica.location)

    async def failed(self, replica: Replica) -> None:
        """Count a failure: the replica loses its placements at once, and may be ejected."""
        if len(self.replicas) < 2:
            return
        self.placements.forget(replica.location)
        ejected = await replica_health.failed(
            self.spec.name,
            replica.location,
            eject_after=self.spec.eject_after,
            eject_seconds=self.spec.eject_seconds,
        )
        if ejected:
            metrics.record_ejection(self.spec.name, replica.base_url)
            logger.warning(
                "%s server %s failed %d times in a row; skipping it for %g s",
                self.spec.label,
                replica.location,
                self.spec.eject_after,
                self.spec.eject_seconds,
            )


# --- The backend ---------------------------------------------------------------------------

# Retried (before any byte reached the client): connection failures and these statuses.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# A replica's health suffers from these statuses (and from connection failures and timeouts).
REPLICA_FAILURE_STATUSES = frozenset({500, 502, 503, 504})
BACKOFF_BASE, BACKOFF_MAX = 0.1, 2.0
# An upstream 429 asking to wait longer than this is passed to the client instead of waited out.
RETRY_AFTER_CAP = 5.0


class OpenAICompatibleBackend:
    """A model served by one or more OpenAI-compatible HTTP servers."""

    # Set once a server refused `response_format: json_schema` (JSON_SCHEMA_MODE=auto).
    refuses_native_schema = False

    def __init__(self, spec: ModelSpec, *, transport: httpx.AsyncBaseTransport | None = None):
        self.spec = spec
        self.pool = ReplicaPool(spec)
        self._transport = transport  # the shared pool (get_transport) unless given
        self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if spec.api_key:
            self._headers["Authorization"] = f"Bearer {spec.api_key}"
        # Every timeout explicit (the transport reads them from the request's extensions).
        self._timeouts = {
            "timeout": httpx.Timeout(
                connect=spec.connect_timeout,
                read=spec.timeout,
                write=spec.timeout,
                pool=spec.timeout,
            ).as_dict()
        }

    async def create(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a non-streaming chat completion and return the decoded answer."""
        data = await self.post("/chat/completions", payload)
        if not isinstance(data.get("choices"), list) or not data["choices"]:
            raise UpstreamProtocolError(
                f"The {self.spec.label} server's answer has no choices; is it OpenAI-compatible?"
            )
        return data

    async def post(
        self, path: str, payload: dict[str, Any], *, from_root: bool = False
    ) -> dict[str, Any]:
        """
        POST `payload` to another OpenAI endpoint of the servers (`/embeddings`,
        `/completions`; with `from_root`, a path beside `/v1`), with the same retries, and
        return the decoded JSON object.
        """
        body = orjson.dumps(payload)

        async def attempt(replica: Replica) -> httpx.Response:
            timing.begin("upstream_ttfb")
            with self._mapped_errors(replica):
                response = await send(
                    httpx.Request(
                        "POST",
                        endpoint_url(replica, path, from_root=from_root),
                        content=body,
                        headers=self._json_headers(replica),
                        extensions=self._timeouts,
                    ),
                    transport=self._transport,
                )
            timing.end("upstream_ttfb")
            if response.status_code >= 400:
                raise self._status_error(
                    replica, response.status_code, response.headers, response.content
                )
            return response

        started = time.perf_counter()
        try:
            response = await self._with_retries(
                attempt, release=True, prefixes=self._prefixes(payload)
            )
        finally:
            timing.add("upstream", time.perf_counter() - started)
        timing.mark_once("ttft")  # a whole answer: its first token arrives with the rest
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"The {self.spec.label} server answered with something that is not JSON."
            ) from None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(
                f"The {self.spec.label} server's answer is not a JSON object; "
                "is it OpenAI-compatible?"
            )
        return data

    @contextlib.asynccontextmanager
    async def stream(
        self, payload: dict[str, Any], *, path: str = "/chat/completions"
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """
        Open a streaming chat completion (or legacy completion, with `path`). The status is
        checked, and failures retried, before anything is yielded; once chunks flow, a
        failure is final.
        """
        body = orjson.dumps(payload)
        opened: dict[str, Any] = {}

        async def attempt(replica: Replica) -> httpx.Response:
            headers = self._json_headers(replica)
            headers["Accept"] = "text/event-stream"
            request = httpx.Request(
                "POST",
                endpoint_url(replica, path),
                content=body,
                headers=headers,
                extensions=self._timeouts,
            )
            timing.begin("upstream_ttfb")
            with self._mapped_errors(replica):
                response = await send(request, stream=True, transport=self._transport)
            timing.end("upstream_ttfb")
            try:
                if response.status_code >= 400:
                    with self._mapped_errors(replica):
                        error_body = await response.aread()
                    raise self._status_error(
                        replica, response.status_code, response.headers, error_body
                    )
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    raise UpstreamProtocolError(
                        f"The {self.spec.label} server did not answer with an event stream."
                    )
            except BaseException:
                await response.aclose()
                raise
            opened["replica"] = replica
            return response

        started = time.perf_counter()
        try:
            response = await self._with_retries(
                attempt, release=False, prefixes=self._prefixes(payload)
            )
        except BaseException:
            timing.add("upstream", time.perf_counter() - started)
            raise
        replica = opened["replica"]
        try:
            yield self._chunks(response, replica)
        except UpstreamUnavailable as exc:
            metrics.record_upstream_error(self.spec.name, replica.base_url, _error_kind(exc))
            await self.pool.failed(replica)
            raise
        finally:
            replica.load.in_flight -= 1
            await response.aclose()
            timing.add("upstream", time.perf_counter() - started)

    async def _with_retries(self, attempt, *, release: bool, prefixes: Sequence[str] = ()):
        """
        Run `attempt(replica)` on the replica the model's routing picks, retrying connection
        failures and 429/502/503/504 on another replica with jittered exponential backoff.
        With `release=False` the chosen replica stays counted as in flight for the caller.
        """
        tried: list[Replica] = []
        for number in range(self.spec.max_retries + 1):
            replica = await self.pool.choose(prefixes=prefixes, avoid=tried)
            replica.load.in_flight += 1
            try:
                result = await attempt(replica)
            except UpstreamError as exc:
                replica.load.in_flight -= 1
                metrics.record_upstream_error(self.spec.name, replica.base_url, _error_kind(exc))
                if exc.replica_failure:
                    await self.pool.failed(replica)
                delay = self._retry_delay(exc, number)
                if delay is None:
                    raise
                metrics.record_retry(self.spec.name, replica.base_url)
                logger.info(
                    "Retrying the %s after %s from %s (attempt %d of %d, in %.2f s)",
                    self.spec.label,
                    type(exc).__name__,
                    replica.location,
                    number + 2,
                    self.spec.max_retries + 1,
                    delay,
                )
                tried.append(replica)
                await asyncio.sleep(delay)
                continue
            except BaseException:
                replica.load.in_flight -= 1
                raise
            timing.annotate(replica=metrics.replica_label(replica.base_url))
            if release:
                replica.load.in_flight -= 1
            answered_replica.set(replica.location)
            await self.pool.succeeded(replica)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _prefixes(self, payload: dict[str, Any]) -> tuple[str, ...]:
        if self.pool.mode != "prefix" or len(self.pool.replicas) < 2:
            return ()
        return routing.prefix_keys(payload)

    def _retry_delay(self, exc: UpstreamError, number: int) -> float | None:
        """Seconds to wait before retrying `exc`, or None when it must not be retried."""
        if number >= self.spec.max_retries or not exc.retryable:
            return None
        retry_after = getattr(exc, "retry_after", None) or 0
        if retry_after > RETRY_AFTER_CAP:
            return None
        backoff = random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2**number))  # noqa: S311
        return max(float(retry_after), backoff)

    def _replica_headers(self, replica: Replica) -> dict[str, str]:
        if replica.authorization:
            return {**self._headers, "Authorization": replica.authorization}
        return self._headers

    def _json_headers(self, replica: Replica) -> dict[str, str]:
        return {**self._replica_headers(replica), "Content-Type": "application/json"}

    @contextlib.contextmanager
    def _mapped_errors(self, replica: Replica):
        where = replica.location
        try:
            yield
        except UpstreamError:
            raise
        except httpx.TimeoutException as exc:
            if _is_real_timeout(exc):
                error: UpstreamError = UpstreamTimeout(
                    f"The {self.spec.label} server at {where} did not answer in time "
                    f"({_timeout_kind(exc)}; see {self.spec.setting('timeout')} and "
                    f"{self.spec.setting('connect_timeout')})."
                )
                error.retryable = isinstance(exc, httpx.ConnectTimeout)
            elif isinstance(exc.__cause__, aiohttp.ClientConnectorError):
                error = UpstreamUnavailable(
                    f"Could not connect to the {self.spec.label} server at {where}."
                )
                error.retryable = True
            else:
                error = UpstreamUnavailable(
                    f"The connection to the {self.spec.label} server at {where} was lost."
                )
            error.replica_failure = True
            raise error from None
        except httpx.ConnectError:
            error = UpstreamUnavailable(
                f"Could not connect to the {self.spec.label} server at {where}."
            )
            error.retryable = error.replica_failure = True
            raise error from None
        except (httpx.TransportError, httpx.StreamError):
            error = UpstreamUnavailable(
                f"The connection to the {self.spec.label} server at {where} failed mid-request."
            )
            error.replica_failure = True
            raise error from None

    def _status_error(
        self, replica: Replica, status: int, headers: httpx.Headers, body: bytes
    ) -> UpstreamStatusError | ContextLengthExceeded:
        message = _error_message_from_body(body)
        if status == 400 and _is_context_length_error(body, message):
            return ContextLengthExceeded(
                f"The messages do not fit the {self.spec.label}'s context window. "
                f"Server said: {message}"
            )
        if status in (401, 403):
            detail = (
                f"The {self.spec.label} server refused the gateway's credentials ({status}); "
                f"check {self.spec.setting('api_key')}. Server said: {message}"
            )
        elif status >= 500:
            detail = f"The {self.spec.label} server failed ({status}): {message}"
        else:
            detail = f"The {self.spec.label} server rejected the request ({status}): {message}"
        error = UpstreamStatusError(
            detail,
            upstream_status=status,
            retry_after=_retry_after(headers) if status == 429 else None,
        )
        error.retryable = status in RETRYABLE_STATUSES
        error.replica_failure = status in REPLICA_FAILURE_STATUSES
        return error

    async def probe(self, replica: Replica) -> bool:
        """Whether the replica answers HTTP at all (any status), within a short timeout."""
        url = replica.url.copy_with(
            path=replica.url.path.removesuffix("/chat/completions") + "/models"
        )
        try:
            await send(
                httpx.Request(
                    "GET",
                    url,
                    headers=self._replica_headers(replica),
                    extensions={"timeout": httpx.Timeout(2.0, connect=1.0).as_dict()},
                ),
                transport=self._transport,
            )
        except httpx.HTTPError:
            return False
        return True

    async def _chunks(
        self, response: httpx.Response, replica: Replica
    ) -> AsyncIterator[dict[str, Any]]:
        finished = False
        with self._mapped_errors(replica):
            try:
                async for event in EventSource(response).aiter_sse():
                    if event.data == "[DONE]":
                        return
                    if event.event == "error":
                        raise UpstreamProtocolError(
                            f"The {self.spec.label} server reported an error mid-stream: "
                            f"{event.data[:MAX_ERROR_MESSAGE_CHARS]}"
                        )
                    if not event.data:
                        continue
                    try:
                        chunk = orjson.loads(event.data)
                    except orjson.JSONDecodeError:
                        raise UpstreamProtocolError(
                            f"The {self.spec.label} server sent an event that is not JSON."
                        ) from None
                    if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
                        raise UpstreamProtocolError(
                            f"The {self.spec.label} server reported an error mid-stream: "
                            f"{_error_message(chunk)}"
                        )
                    finished = (
                        finished
                        or chunk.get("type") in RESPONSES_FINAL_EVENTS
                        or any(choice.get("finish_reason") for choice in chunk.get("choices") or ())
                    )
                    timing.mark_once("ttft")
                    yield chunk
            except SSEError:
                raise UpstreamProtocolError(
                    f"The {self.spec.label} server did not answer with an event stream."
                ) from None
        if not finished:
            # Some servers omit `[DONE]`; a stream that ended without a finish_reason was cut.
            raise UpstreamUnavailable(
                f"The {self.spec.label} server closed the stream before it finished."
            )


# The events that end a Responses API stream (a passed-through /v1/responses).
RESPONSES_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _error_kind(exc: UpstreamError) -> str:
    """A short fixed word for a failed attempt (a metric label)."""
    if isinstance(exc, UpstreamStatusError):
        return f"http_{exc.upstream_status}"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamUnavailable):
        return "unavailable"
    if isinstance(exc, UpstreamProtocolError):
        return "protocol"
    return "other"


def endpoint_url(replica: Replica, path: str, *, from_root: bool = False) -> httpx.URL:
    """
    The replica's URL for another OpenAI endpoint: `/v1/chat/completions` -> `/v1<path>`, or
    beside `/v1` for a server's own endpoints (`from_root`: vLLM's and llama.cpp's `/tokenize`).
    """
    if path == "/chat/completions" and not from_root:
        return replica.url
    base = replica.url.path.removesuffix("/chat/completions")
    if from_root:
        base = base.removesuffix("/v1")
    return replica.url.copy_with(path=base + path)


def _is_real_timeout(exc: httpx.TimeoutException) -> bool:
    # The aiohttp transport reports refused and dropped connections as ConnectTimeout; only
    # a timeout whose cause is a timeout is one.
    cause = exc.__cause__
    return cause is None or isinstance(cause, TimeoutError)


def _timeout_kind(exc: httpx.TimeoutException) -> str:
    return "connect timeout" if isinstance(exc, httpx.ConnectTimeout) else "read timeout"


def _retry_after(headers: httpx.Headers) -> int:
    try:
        return max(1, int(float(headers.get("Retry-After", "1"))))
    except ValueError:
        return 1


def _error_message(data: Any) -> str:
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return str(error)[:MAX_ERROR_MESSAGE_CHARS]
    return str(data)[:MAX_ERROR_MESSAGE_CHARS]


# How servers say a prompt is too long: OpenAI's and vLLM's code and message, llama.cpp's type.
CONTEXT_LENGTH_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "exceed_context_size",
    "exceeds the available context size",
)


def _is_context_length_error(body: bytes, message: str) -> bool:
    text = (body[:4096].decode("utf-8", "replace") + " " + message).lower()
    return any(marker in text for marker in CONTEXT_LENGTH_MARKERS)


def _error_message_from_body(body: bytes) -> str:
    try:
        return _error_message(orjson.loads(body))
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:MAX_ERROR_MESSAGE_CHARS] or "(empty body)"
