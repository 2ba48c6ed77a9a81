"""
The one module that speaks HTTP to model servers.

Any OpenAI-compatible server works: vLLM, llama.cpp's server, Ollama, OpenAI itself. All
requests go through one long-lived `httpx.AsyncClient` per event loop, on the aiohttp
transport (measurably faster than httpx's default one), with every timeout set explicitly.

`OpenAICompatibleBackend` exposes the interface the services use for any model, local or
remote:

* `await backend.create(payload)` returns the server's `chat.completion` object;
* `async with backend.stream(payload) as chunks:` checks the status first, then yields the
  `chat.completion.chunk` objects as they arrive. Leaving the block closes the upstream
  request at once, which is how a client disconnect reaches the model server.

Failures are raised as the `UpstreamError` family from `completions.exceptions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport
from httpx_sse import EventSource, SSEError

from completions.exceptions import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from completions.registry import ModelSpec

logger = logging.getLogger(__name__)

MAX_ERROR_MESSAGE_CHARS = 500


class ChatBackend(Protocol):
    async def create(self, payload: dict[str, Any]) -> dict[str, Any]: ...

    def stream(
        self, payload: dict[str, Any]
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]: ...


# --- The shared client ---------------------------------------------------------------------

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def get_http_client() -> httpx.AsyncClient:
    """Return this event loop's shared client, creating it on first use."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits),
            limits=limits,
            # Proxies from the environment would bypass the aiohttp transport; a gateway talks
            # to its model servers directly.
            trust_env=False,
            follow_redirects=False,
        )
        _clients[loop] = client
    return client


async def close_http_clients() -> None:
    """Close this event loop's client (called on server shutdown)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def chat_completions_url(base_url: str) -> str:
    """`http://host:8000` and `http://host:8000/v1` both mean `http://host:8000/v1/...`."""
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


def public_location(base_url: str) -> str:
    """The server's address without credentials or path, safe to show in an error."""
    try:
        url = httpx.URL(base_url)
        return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
    except httpx.InvalidURL:
        return "the configured address"


# --- The backend ---------------------------------------------------------------------------


class OpenAICompatibleBackend:
    """A model served by an OpenAI-compatible HTTP server."""

    def __init__(self, spec: ModelSpec, *, client: httpx.AsyncClient | None = None) -> None:
        self.spec = spec
        # Parsed once: httpx would otherwise parse the URL string on every request.
        self.url = httpx.URL(chat_completions_url(spec.base_url))
        self.location = public_location(spec.base_url)
        self._client = client
        self._headers = {"Accept": "application/json"}
        if spec.api_key:
            self._headers["Authorization"] = f"Bearer {spec.api_key}"
        self._timeout = httpx.Timeout(
            connect=spec.connect_timeout, read=spec.timeout, write=spec.timeout, pool=spec.timeout
        )

    @property
    def client(self) -> httpx.AsyncClient:
        return self._client or get_http_client()

    async def create(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a non-streaming chat completion and return the decoded answer."""
        with self._mapped_errors():
            response = await self.client.post(
                self.url,
                content=orjson.dumps(payload),
                headers=self._json_headers(),
                timeout=self._timeout,
            )
        if response.status_code >= 400:
            raise self._status_error(response.status_code, response.headers, response.content)
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"The {self.spec.label} server answered with something that is not JSON."
            ) from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("choices"), list)
            or not data["choices"]
        ):
            raise UpstreamProtocolError(
                f"The {self.spec.label} server's answer has no choices; is it OpenAI-compatible?"
            )
        return data

    @contextlib.asynccontextmanager
    async def stream(self, payload: dict[str, Any]) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Open a streaming chat completion; the status is checked before anything is yielded."""
        headers = self._json_headers()
        headers["Accept"] = "text/event-stream"
        request = self.client.build_request(
            "POST", self.url, content=orjson.dumps(payload), headers=headers, timeout=self._timeout
        )
        with self._mapped_errors():
            response = await self.client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                with self._mapped_errors():
                    body = await response.aread()
                raise self._status_error(response.status_code, response.headers, body)
            if "text/event-stream" not in response.headers.get("content-type", ""):
                raise UpstreamProtocolError(
                    f"The {self.spec.label} server did not answer with an event stream."
                )
            yield self._chunks(response)
        finally:
            await response.aclose()

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        finished = False
        with self._mapped_errors():
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
                    finished = finished or any(
                        choice.get("finish_reason") for choice in chunk.get("choices") or ()
                    )
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

    def _json_headers(self) -> dict[str, str]:
        return {**self._headers, "Content-Type": "application/json"}

    @contextlib.contextmanager
    def _mapped_errors(self):
        where = self.location
        try:
            yield
        except UpstreamError:
            raise
        except httpx.TimeoutException as exc:
            if _is_real_timeout(exc):
                raise UpstreamTimeout(
                    f"The {self.spec.label} server at {where} did not answer in time "
                    f"({_timeout_kind(exc)}; see {self.spec.env_prefix}__TIMEOUT and "
                    f"{self.spec.env_prefix}__CONNECT_TIMEOUT)."
                ) from None
            if isinstance(exc.__cause__, aiohttp.ClientConnectorError):
                raise UpstreamUnavailable(
                    f"Could not connect to the {self.spec.label} server at {where}."
                ) from None
            raise UpstreamUnavailable(
                f"The connection to the {self.spec.label} server at {where} was lost."
            ) from None
        except httpx.ConnectError:
            raise UpstreamUnavailable(
                f"Could not connect to the {self.spec.label} server at {where}."
            ) from None
        except (httpx.TransportError, httpx.StreamError):
            raise UpstreamUnavailable(
                f"The connection to the {self.spec.label} server at {where} failed mid-request."
            ) from None

    def _status_error(
        self, status: int, headers: httpx.Headers, body: bytes
    ) -> UpstreamStatusError:
        message = _error_message_from_body(body)
        if status in (401, 403):
            detail = (
                f"The {self.spec.label} server refused the gateway's credentials ({status}); "
                f"check {self.spec.env_prefix}__API_KEY. Server said: {message}"
            )
        elif status >= 500:
            detail = f"The {self.spec.label} server failed ({status}): {message}"
        else:
            detail = f"The {self.spec.label} server rejected the request ({status}): {message}"
        return UpstreamStatusError(
            detail,
            upstream_status=status,
            retry_after=_retry_after(headers) if status == 429 else None,
        )


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


def _error_message_from_body(body: bytes) -> str:
    try:
        return _error_message(orjson.loads(body))
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:MAX_ERROR_MESSAGE_CHARS] or "(empty body)"
