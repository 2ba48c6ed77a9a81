"""
The bounded httptools protocol, driven like uvicorn drives it: a real parser and a real ASGI app
on a transport that records what is written. These tests also pin the uvicorn internals the
protocol builds on: they fail if an upgrade changes them.
"""

from __future__ import annotations

import asyncio

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from server.http_protocol import BoundedHttpToolsProtocol


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.eof = False

    def write(self, data) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 1999)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class App:
    """Answers 200 after reading the whole body; records what it received."""

    def __init__(self) -> None:
        self.calls = 0
        self.messages: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        while True:
            message = await receive()
            self.messages.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        if self.messages[-1]["type"] == "http.disconnect":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def connection(app: App, **limits) -> tuple[BoundedHttpToolsProtocol, RecordingTransport]:
    config = Config(app=app, lifespan="off", log_level="critical")
    protocol = BoundedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    for name, value in limits.items():
        setattr(protocol, name, value)
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


def status(transport: RecordingTransport) -> int | None:
    if not transport.written.startswith(b"HTTP/1.1 "):
        return None
    return int(bytes(transport.written).split(b" ", 2)[1])


async def test_headers_over_the_limit_get_431_and_are_not_parsed():
    app = App()
    protocol, transport = connection(app, max_header_bytes=1000)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 500)
    protocol.data_received(b"a" * 10_000_000)
    await asyncio.sleep(0)
    assert status(transport) == 431
    assert transport.eof  # answered, then closed after a short linger
    assert app.calls == 0


async def test_bytes_after_a_refusal_are_dropped_then_the_connection_closes():
    protocol, transport = connection(App(), max_header_bytes=100)
    protocol.data_received(b"GET / HTTP/1.1\r\nX: " + b"a" * 200)
    assert not transport.closed
    protocol.data_received(b"a" * 5 * 1024 * 1024)  # past the linger budget
    assert transport.closed


async def test_headers_within_the_limit_reach_the_app_with_their_body():
    app = App()
    protocol, transport = connection(app, max_header_bytes=1000)
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"b" * 5000
    protocol.data_received(request)  # one chunk, larger than the header limit
    for _ in range(5):
        await asyncio.sleep(0)
    assert status(transport) == 200
    assert sum(len(m.get("body", b"")) for m in app.messages) == 5000


async def test_slow_headers_get_408():
    protocol, transport = connection(App(), header_timeout=0.05)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
    await asyncio.sleep(0.2)
    assert status(transport) == 408


async def test_slow_body_gets_408_and_the_app_sees_a_disconnect():
    app = App()
    protocol, transport = connection(app, body_timeout=0.05)
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await asyncio.sleep(0.2)
    assert status(transport) == 408
    assert transport.closed
    assert app.messages[-1]["type"] == "http.disconnect"


async def test_deadlines_stop_once_the_request_is_read():
    app = App()
    protocol, transport = connection(app, header_timeout=0.05, body_timeout=0.05)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.2)
    assert status(transport) == 200
    assert b"408" not in transport.written


@pytest.mark.parametrize(
    "hook",
    [
        "connection_made",
        "connection_lost",
        "data_received",
        "on_headers_complete",
        "on_message_complete",
        "on_response_complete",
    ],
)
def test_uvicorn_still_has_the_hooks_the_protocol_overrides(hook):
    assert callable(getattr(HttpToolsProtocol, hook))
