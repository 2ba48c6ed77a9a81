"""
How the shared limits' commands reach Redis: one small interface (`Transport`), two
implementations, chosen from `REDIS_URL` and `LIMITS__REDIS_CLIENT`.

- `pipelined` (`limits.redis_connection.PipelinedConnection`): the hand-written RESP connection,
  one per event loop, batches written as they come and their replies matched in order. The
  cheapest in CPU; `redis://`, `rediss://` and `unix://` only.
- `redis-py` (`RedisPyTransport`): redis-py's asyncio client. Every batch queued while the
  previous one was on its way goes out as one redis-py pipeline (`transaction=False`), so
  batches keep their order and a busy loop sends few, large pipelines. It brings what redis-py
  supports, Sentinel among it; a Sentinel URL always uses it.

The Lua scripts and the batching of script calls (`limits.redis_client`) are the same on both:
only the bytes' way to Redis differs.

URL forms (besides redis-py's own `redis://`, `rediss://`, `unix://`):

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db][?options]

The hosts are Sentinels (port 26379 by default); `user` and `password` are those of the Redis
servers they watch. Options: `sentinel_username` and `sentinel_password` when the Sentinels
themselves ask for a password. Connections go to the master the Sentinels name: after a
failover the old master's connections fail (closed by the Sentinels, or refused as read-only)
and the next one asks the Sentinels again.

Failures are reported as the pipelined connection reports them (`ConnectionError`,
`TimeoutError`; an error reply is a `ReplyError` in the list of replies), so the failure rules
of `limits.redis_client` apply unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.exceptions
import redis.sentinel
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from limits.per_loop import running_loop
from limits.redis_connection import PipelinedConnection, ReplyError

CLIENTS = ("pipelined", "redis-py")
SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379


class Transport(Protocol):
    """Batches of commands to Redis and back; see `PipelinedConnection.execute`."""

    @property
    def ready(self) -> bool: ...

    def submit(self, commands: Sequence[Sequence[Any]]) -> asyncio.Future[list[Any]]: ...

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


def is_sentinel(url: str) -> bool:
    return url.lower().startswith(f"{SENTINEL_SCHEME}://")


def new_transport(
    url: str, *, client: str, connect_timeout: float, timeout: float
) -> PipelinedConnection | RedisPyTransport:
    """The transport `client` names (`pipelined` or `redis-py`); a Sentinel URL takes redis-py."""
    if client == "pipelined" and not is_sentinel(url):
        return PipelinedConnection(url, connect_timeout=connect_timeout, timeout=timeout)
    # Never retried: a batch of scripts whose connection broke after it was written may have
    # run, and running it again would count twice. A dead idle connection is found (and
    # replaced) before a batch is written on it.
    return RedisPyTransport(
        redis_py_client(
            url, max_connections=4, connect_timeout=connect_timeout, timeout=timeout, retries=0
        ),
        timeout=connect_timeout + timeout,
    )


# --- redis-py clients, Sentinel included ---------------------------------------------------


@dataclass(frozen=True)
class SentinelAddress:
    """A `redis+sentinel://` URL, read."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str) -> SentinelAddress:
        parts = urlsplit(url)
        credentials, _, hosts = parts.netloc.rpartition("@")
        username, _, password = credentials.partition(":")
        sentinels = [_host_port(each) for each in hosts.split(",") if each]
        path = [unquote(each) for each in parts.path.split("/") if each]
        if not sentinels or not path or len(path) > 2:
            raise ValueError(
                "a Sentinel URL reads "
                "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]"
            )
        if len(path) == 2 and not path[1].isdigit():
            raise ValueError(f"the database in a Sentinel URL is a number, not {path[1]!r}")
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        return cls(
            sentinels=sentinels,
            service=path[0],
            db=int(path[1]) if len(path) == 2 else 0,
            username=unquote(username) or None,
            password=unquote(password) if credentials and password else None,
            sentinel_username=query.pop("sentinel_username", None),
            sentinel_password=query.pop("sentinel_password", None),
            options=query,
        )

    def node_kwargs(self) -> dict[str, Any]:
        """Connection arguments for the Redis servers."""
        return {"db": self.db, "username": self.username, "password": self.password}

    def sentinel_kwargs(self, **timeouts: Any) -> dict[str, Any]:
        return {
            "username": self.sentinel_username,
            "password": self.sentinel_password,
            **timeouts,
        }


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host or (port and not port.isdigit()):
        raise ValueError(f"a Sentinel's address is host[:port], not {text!r}")
    return host, int(port) if port else SENTINEL_PORT


class _SentinelMaster(aioredis.Redis):
    """A client of the master Sentinel names, which also closes its connections to Sentinel."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if isinstance(manager, Sentinel):
            await manager.aclose()


def redis_py_client(
    url: str, *, max_connections: int, connect_timeout: float, timeout: float, retries: int
) -> aioredis.Redis:
    """
    A redis-py asyncio client for `url` (Sentinel URLs included), every timeout explicit and
    short: waiting for a pooled connection, connecting, and each reply. `retries` immediate
    retries on a new connection after a connection error (never after a timeout: a reply may
    be late, not lost).
    """
    timeouts: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": timeout,
        "socket_keepalive": True,
    }
    common: dict[str, Any] = {
        **timeouts,
        "retry": Retry(NoBackoff(), retries),
        "retry_on_timeout": False,
    }
    if is_sentinel(url):
        address = SentinelAddress.from_url(url)
        sentinel = Sentinel(
            address.sentinels,
            sentinel_kwargs=address.sentinel_kwargs(**timeouts),
        )
        return sentinel.master_for(
            address.service,
            redis_class=_SentinelMaster,
            connection_pool_class=SentinelConnectionPool,
            max_connections=max_connections,
            **address.node_kwargs(),
            **common,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,  # waiting for a free pooled connection counts against the same budget
        **common,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it


class SentinelCachePool(redis.sentinel.SentinelConnectionPool):
    """
    For Django's Redis cache (browser sessions), which builds its pool with
    `pool_class.from_url(LOCATION, **OPTIONS)`: a `redis+sentinel://` URL read as above.
    """

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SentinelCachePool:
        address = SentinelAddress.from_url(url)
        timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
        sentinel = redis.sentinel.Sentinel(
            address.sentinels, sentinel_kwargs=address.sentinel_kwargs(**timeouts)
        )
        return cls(address.service, sentinel, **address.node_kwargs(), **options)

    def disconnect(self, inuse_connections: bool = True) -> None:
        # The pool's own connections, and those it opened to the Sentinels to find the master.
        super().disconnect(inuse_connections)
        for client in self.sentinel_manager.sentinels:
            client.connection_pool.disconnect()


# --- the redis-py transport ----------------------------------------------------------------


@dataclass(slots=True)
class _Batch:
    commands: Sequence[Sequence[Any]]
    future: asyncio.Future[list[Any]]


class RedisPyTransport:
    """
    Batches through redis-py: one pipeline at a time per event loop, carrying every batch
    submitted while the previous pipeline was on its way, in order.
    """

    def __init__(self, client: aioredis.Redis, *, timeout: float) -> None:
        self.client = client
        self.timeout = timeout  # a whole pipeline: connecting (finding the master), replies
        self._pending: deque[_Batch] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def ready(self) -> bool:
        # Connecting is part of sending a pipeline, under the same timeouts.
        return not self._closed

    def submit(self, commands: Sequence[Sequence[Any]]) -> asyncio.Future[list[Any]]:
        if self._closed:
            raise ConnectionError("the connection to Redis is closed")
        loop = running_loop()
        future = loop.create_future()
        self._pending.append(_Batch(commands, future))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send_pending(), name="redis-py-pipeline")
        return future

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        return await self.submit(commands)

    async def _send_pending(self) -> None:
        while self._pending:
            batches = list(self._pending)
            self._pending.clear()
            try:
                replies = await self._pipeline([c for b in batches for c in b.commands])
            except asyncio.CancelledError:
                _fail(batches, ConnectionError("the connection to Redis is closed"))
                raise
            except Exception as exc:  # every error becomes ConnectionError or TimeoutError
                _fail(batches, _as_network_error(exc))
                continue
            at = 0
            for batch in batches:
                count = len(batch.commands)
                if not batch.future.done():
                    batch.future.set_result(replies[at : at + count])
                at += count

    async def _pipeline(self, commands: list[Sequence[Any]]) -> list[Any]:
        async with asyncio.timeout(self.timeout):
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        return [_as_reply(reply) for reply in replies]

    def close(self) -> None:
        """Stop sending: batches still waiting fail with ConnectionError."""
        self._closed = True
        error = ConnectionError("the connection to Redis is closed")
        while self._pending:
            batch = self._pending.popleft()
            if not batch.future.done():
                batch.future.set_exception(error)
        if self._sender is not None:
            self._sender.cancel()

    async def aclose(self) -> None:
        self.close()
        if self._sender is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        await self.client.aclose()


def _fail(batches: list[_Batch], error: Exception) -> None:
    for batch in batches:
        if not batch.future.done():
            batch.future.set_exception(error)


def _as_reply(reply: Any) -> Any:
    """redis-py's error replies as the pipelined connection gives them (`ReplyError`)."""
    if isinstance(reply, redis.exceptions.NoScriptError):
        return ReplyError(f"NOSCRIPT {reply}")  # redis-py strips the error's code
    if isinstance(reply, redis.exceptions.ResponseError):
        return ReplyError(str(reply))
    return reply


def _as_network_error(exc: Exception) -> Exception:
    if isinstance(exc, TimeoutError | redis.exceptions.TimeoutError):
        return TimeoutError(str(exc) or "Redis did not answer in time")
    if isinstance(exc, OSError):
        return exc
    # redis-py's ConnectionError (a master not found, a refused AUTH, ...) and anything else
    # it raises: the link is unusable for now.
    return ConnectionError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
