"""
The connection the shared limits' commands travel on: one per event loop, pipelined.

Commands are written as soon as they are sent, and Redis answers a connection's commands in
the order they came, so every request on the loop shares one connection without waiting for
another's reply, and a batch of commands costs one write and one read. RESP is encoded and
parsed by hiredis, Redis's own C parser. Through redis-py's pipelines the same scripts cost
about five times the CPU per request (most of it building and parsing commands in Python).

redis-py remains the client for pub/sub (`limits.redis_events`), which holds its own
connection in subscriber mode, and carries the scripts instead of this connection where
`limits.redis_transport` chooses it (Sentinel, or `LIMITS__REDIS_CLIENT=redis-py`).

`REDIS_URL` forms: `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS, with
`?ssl_cert_reqs=none` to skip verification and `?ssl_ca_certs=/path` for a private CA), and
`unix:///path/to/redis.sock[?db=N]`.

Failures: a connection that cannot be opened within `connect_timeout`, is refused, reset or
closed fails the batches waiting on it (`ConnectionError`); a batch whose replies are later
than `timeout` closes the connection (`TimeoutError`), so that no late reply can be taken for
another batch's. The next batch opens a new connection.

A deadline that passes while this process itself was stalled (a long garbage collection, the
first request's imports) is not Redis's fault: the reply may be waiting, unread, in the socket.
Such a deadline gives the loop one more short turn (`STALL`) before it fails.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import hiredis
from redis.asyncio.connection import parse_url

from limits.per_loop import running_loop

ReplyError = hiredis.ReplyError  # an error reply (a script's error, NOSCRIPT, WRONGPASS, ...)

STALL = 0.02  # seconds: a deadline noticed later than this was missed by this process's stall


@dataclass(frozen=True)
class Address:
    """Where and how to connect, from REDIS_URL."""

    host: str = "localhost"
    port: int = 6379
    path: str = ""  # a Unix socket instead of host and port
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    verify: bool = True
    ca_file: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Address:
        options: dict[str, Any] = dict(parse_url(url))  # redis-py's reading of the URL
        tls = url.lower().startswith("rediss://")
        reqs = str(options.get("ssl_cert_reqs", "required")).lower()
        return cls(
            host=options.get("host", "localhost"),
            port=int(options.get("port", 6379)),
            path=options.get("path", ""),
            db=int(options.get("db", 0)),
            username=options.get("username"),
            password=options.get("password"),
            tls=tls,
            verify=reqs not in ("none", "cert_none"),
            ca_file=options.get("ssl_ca_certs"),
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(slots=True)
class _Batch:
    future: asyncio.Future[list[Any]]
    count: int
    replies: list[Any] = field(default_factory=list)


class _Protocol(asyncio.Protocol):
    """Replies matched to batches in order; every waiting batch fails when the link goes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.batches: deque[_Batch] = deque()
        self._parser = hiredis.Reader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, payload: bytes, count: int) -> asyncio.Future[list[Any]]:
        if self.transport is None:
            raise ConnectionError("connection to Redis lost")
        future = running_loop().create_future()
        self.batches.append(_Batch(future, count))
        self.transport.write(payload)
        return future

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        batches = self.batches
        while True:
            try:
                reply = self._parser.gets()
            except hiredis.ProtocolError:
                self.abort()
                return
            if reply is False:
                return
            if not batches:  # a reply nobody asked for: the stream cannot be trusted
                self.abort()
                return
            batch = batches[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.count:
                batches.popleft()
                if not batch.future.done():  # not given up by its caller
                    batch.future.set_result(batch.replies)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows and fails the waiting batches

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        error = ConnectionError(f"connection to Redis lost ({exc or 'closed'})")
        while self.batches:
            batch = self.batches.popleft()
            if not batch.future.done():
                batch.future.set_exception(error)


def pack(commands: Sequence[Sequence[Any]]) -> bytes:
    """Commands in RESP (arguments: str, bytes, int or float)."""
    return b"".join([hiredis.pack_command(tuple(command)) for command in commands])


class PipelinedConnection:
    """One connection to Redis, shared by every caller on one event loop."""

    def __init__(self, url: str, *, connect_timeout: float, timeout: float) -> None:
        self.address = Address.from_url(url)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._opening: asyncio.Lock | None = None

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """
        Send `commands` in one write and return their replies in order; an error reply is a
        `ReplyError` in the list. Raises `ConnectionError`, `OSError` or `TimeoutError` when
        Redis cannot be reached or answers late.
        """
        if not self.ready:
            await self._connect()
        return await self.submit(commands)

    @property
    def ready(self) -> bool:
        """Whether `submit` can send now (the connection is open)."""
        return self._protocol is not None and self._protocol.open

    def submit(self, commands: Sequence[Sequence[Any]]) -> asyncio.Future[list[Any]]:
        """
        `execute` without a coroutine, on an open connection (`ready`): the commands are
        written now, and the future gets their replies or the error.
        """
        if self._protocol is None:
            raise ConnectionError("not connected to Redis")
        return self._send(self._protocol, commands)

    def _send(
        self, protocol: _Protocol, commands: Sequence[Sequence[Any]]
    ) -> asyncio.Future[list[Any]]:
        """Write `commands` on `protocol`; their replies, or TimeoutError after `timeout`."""
        future = protocol.send(pack(commands), len(commands))
        deadline = _Deadline(self.timeout, future, partial(_late, future, protocol))
        future.add_done_callback(deadline.cancel)
        return future

    async def _connect(self) -> _Protocol:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._protocol is not None and self._protocol.open:
                return self._protocol  # opened by another caller meanwhile
            self._protocol = None
            protocol = await self._open()
            self._protocol = protocol
            return protocol

    async def _open(self) -> _Protocol:
        dialing = asyncio.ensure_future(self._dial())
        deadline = _Deadline(self.connect_timeout, dialing, dialing.cancel)
        try:
            protocol = await dialing
        except asyncio.CancelledError:
            if deadline.passed:
                raise TimeoutError(
                    f"no connection to Redis within {self.connect_timeout} s"
                ) from None
            raise
        finally:
            deadline.cancel()
        try:
            await self._greet(protocol)
        except BaseException:
            protocol.abort()
            raise
        return protocol

    async def _dial(self) -> _Protocol:
        loop = running_loop()
        address = self.address
        if address.path:
            _, protocol = await loop.create_unix_connection(_Protocol, address.path)
        else:
            context = address.ssl_context()
            _, protocol = await loop.create_connection(
                _Protocol,
                address.host,
                address.port,
                ssl=context,
                server_hostname=address.host if context else None,
            )
        return protocol

    async def _greet(self, protocol: _Protocol) -> None:
        """AUTH and SELECT, as the URL asks."""
        address = self.address
        handshake: list[tuple[Any, ...]] = []
        if address.password is not None:
            user = (address.username,) if address.username else ()
            handshake.append(("AUTH", *user, address.password))
        if address.db:
            handshake.append(("SELECT", address.db))
        if not handshake:
            return
        replies = await self._send(protocol, handshake)
        for command, reply in zip(handshake, replies, strict=True):
            if isinstance(reply, ReplyError):
                # The command's name only: never the password.
                raise ConnectionError(f"Redis refused {command[0]}: {reply}")

    def close(self) -> None:
        """Close the connection (batches still waiting fail with ConnectionError)."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    async def aclose(self) -> None:
        self.close()


class _Deadline:
    """
    Call `give_up` if `future` is not done `seconds` from now (failing a batch, or cancelling
    a dial), with the stall allowance of the module docstring; `passed` tells it happened.
    """

    __slots__ = ("_future", "_give_up", "_handle", "_loop", "_at", "_stalled", "passed")

    def __init__(
        self, seconds: float, future: asyncio.Future[Any], give_up: Callable[[], object]
    ) -> None:
        self._loop = running_loop()
        self._future, self._give_up = future, give_up
        self._at = self._loop.time() + seconds
        self._handle = self._loop.call_at(self._at, self._fire)
        self._stalled = False
        self.passed = False

    def _fire(self) -> None:
        if self._future.done():
            return
        now = self._loop.time()
        if now - self._at > STALL and not self._stalled:
            # Noticed late: this process was stalled. Let the loop read its sockets first.
            self._stalled = True
            self._at = now + STALL
            self._handle = self._loop.call_at(self._at, self._fire)
            return
        self.passed = True
        self._give_up()

    def cancel(self, _: object = None) -> None:
        self._handle.cancel()


def _late(future: asyncio.Future[Any], protocol: _Protocol) -> None:
    """A batch's replies are late: fail it and close the connection (the others fail too)."""
    future.set_exception(TimeoutError("Redis did not answer in time"))
    protocol.abort()
