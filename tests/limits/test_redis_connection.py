"""
The pipelined connection: one connection for every caller, replies matched in order, the
URL's password and database, and what happens when Redis is slow, gone or back.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import pytest
import uvloop

from limits.redis_connection import Address, PipelinedConnection, ReplyError
from tests.redis_server import RedisServer
from tests.waiting import eventually


def connect(url: str, timeout: float = 0.5) -> PipelinedConnection:
    return PipelinedConnection(url, connect_timeout=0.5, timeout=timeout)


async def test_concurrent_callers_share_one_connection_in_order(redis_server):
    redis_server.command("DEL", "n")
    connection = connect(redis_server.url)
    replies = await asyncio.gather(
        *(connection.execute([("INCR", "n"), ("CLIENT", "ID")]) for _ in range(50))
    )
    assert [reply[0] for reply in replies] == list(range(1, 51))  # sent in that order
    assert len({reply[1] for reply in replies}) == 1  # one connection
    connection.close()


async def test_an_error_reply_stays_in_its_place(redis_server):
    connection = connect(redis_server.url)
    replies = await connection.execute(
        [("SET", "e", "text"), ("INCR", "e"), ("GET", "e"), ("EVALSHA", "0" * 40, 0)]
    )
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ReplyError)
    assert replies[2] == b"text"
    assert isinstance(replies[3], ReplyError) and str(replies[3]).startswith("NOSCRIPT")
    connection.close()


async def test_a_caller_that_gives_up_does_not_take_another_callers_reply(redis_server):
    connection = connect(redis_server.url, timeout=5)
    # BLPOP holds the connection for 0.3 s; its caller stops waiting before the reply.
    blocked = asyncio.ensure_future(connection.execute([("BLPOP", "empty-list", "0.3")]))
    await asyncio.sleep(0.05)
    blocked.cancel()
    assert await connection.execute([("ECHO", "mine")]) == [b"mine"]
    assert blocked.cancelled()
    connection.close()


@pytest.fixture(scope="module")
def guarded_server():
    """A redis-server that wants a password, also listening on a Unix socket."""
    server = RedisServer(None, "--requirepass", "s3cret-pw")
    server.options += ["--unixsocket", str(server.dir / "redis.sock")]
    server.start()
    yield server
    server.stop()


async def test_the_password_and_database_come_from_the_url(guarded_server):
    url = f"redis://:s3cret-pw@127.0.0.1:{guarded_server.port}/3"
    connection = connect(url)
    (info,) = await connection.execute([("CLIENT", "INFO")])
    assert b" db=3 " in info
    connection.close()


async def test_a_wrong_password_fails_without_showing_it(guarded_server):
    connection = connect(f"redis://:not-the-pw@127.0.0.1:{guarded_server.port}/0")
    with pytest.raises(ConnectionError) as refused:
        await connection.execute([("PING",)])
    assert "AUTH" in str(refused.value)
    assert "not-the-pw" not in str(refused.value)


async def test_a_unix_socket(guarded_server):
    path = guarded_server.dir / "redis.sock"
    connection = connect(f"unix://:s3cret-pw@{path}?db=2")
    assert await connection.execute([("PING",)]) == [b"PONG"]
    (info,) = await connection.execute([("CLIENT", "INFO")])
    assert b" db=2 " in info
    connection.close()


class _Silent(asyncio.Protocol):
    """A server's side of a connection that reads commands and never answers."""

    def __init__(self, connections: list[_Silent]) -> None:
        connections.append(self)
        self.lost = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


async def test_late_replies_close_the_connection_and_the_next_call_reconnects():
    connections: list[_Silent] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Silent(connections), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = connect(f"redis://127.0.0.1:{port}/0", timeout=0.1)
    # The connection's own timeout ends the call; the test's deadline only catches a hang.
    call = asyncio.create_task(connection.execute([("PING",)]))
    done, _ = await asyncio.wait({call}, timeout=60)
    assert call in done, "the call was never given up"
    assert isinstance(call.exception(), TimeoutError)
    # Given up: no late reply can be taken for another call.
    await eventually(lambda: connections[0].lost)
    with pytest.raises(TimeoutError):
        await connection.execute([("PING",)])
    assert len(connections) == 2  # a new connection
    connection.close()
    server.close()
    await server.wait_closed()


def test_a_stall_of_this_process_is_not_taken_for_a_slow_redis():
    """
    On uvloop (as the gateway runs) timers run before the loop reads its sockets: a deadline
    that passed while the process was busy must first look at what arrived meanwhile.
    """
    # A server (in a thread) that answers each command at once, and says when it has.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    replied = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while conn.recv(65536):
                conn.sendall(b"$7\r\non time\r\n")
                replied.set()

    threading.Thread(target=serve, daemon=True).start()
    timeout = 2.0

    def stall() -> None:
        # The reply is in the socket's buffer, and the call's deadline passes, while the loop
        # is busy: however slow the machine, the deadline has passed when the loop is back.
        replied.wait(60)
        time.sleep(timeout + 0.1)

    async def scenario() -> list:
        loop = asyncio.get_running_loop()
        connection = connect(f"redis://127.0.0.1:{port}/0", timeout=timeout)
        await connection.execute([("ECHO", "on time")])  # connected
        replied.clear()
        # Another socket's callback blocks the loop until after the call's deadline.
        busy, poke = socket.socketpair()
        loop.add_reader(busy, lambda: (loop.remove_reader(busy), stall()))
        poke.send(b"x")
        try:
            return await connection.execute([("ECHO", "on time")])
        finally:
            connection.close()
            busy.close()
            poke.close()

    try:
        assert uvloop.run(scenario()) == [b"on time"]
    finally:
        listener.close()


async def test_nobody_listening_is_a_connection_error():
    connection = connect("redis://127.0.0.1:1/0")
    with pytest.raises(OSError):
        await connection.execute([("PING",)])


async def test_a_restarted_redis_is_used_again_without_a_failed_call(own_redis_server):
    connection = connect(own_redis_server.url)
    assert await connection.execute([("PING",)]) == [b"PONG"]
    own_redis_server.kill()
    await asyncio.sleep(0.1)  # the connection sees the close
    with pytest.raises(OSError):
        await connection.execute([("PING",)])  # down
    own_redis_server.start()
    assert await connection.execute([("PING",)]) == [b"PONG"]
    connection.close()


def test_tls_options_from_the_url():
    address = Address.from_url("rediss://user:pw@cache.example:6380/1?ssl_cert_reqs=none")
    assert (address.host, address.port, address.db) == ("cache.example", 6380, 1)
    assert (address.username, address.password, address.tls) == ("user", "pw", True)
    context = address.ssl_context()
    assert context is not None and context.verify_mode == ssl.CERT_NONE
    verified = Address.from_url("rediss://cache.example").ssl_context()
    assert verified is not None and verified.verify_mode == ssl.CERT_REQUIRED
    assert verified.check_hostname
    assert Address.from_url("redis://cache.example").ssl_context() is None


async def test_the_outage_log_line_says_why_without_the_password(guarded_server, settings, caplog):
    from limits import lifespan, redis_client
    from tests.limits.conftest import shared_limits_settings

    url = f"redis://:not-the-pw@127.0.0.1:{guarded_server.port}/0"
    settings.SHARED_LIMITS = shared_limits_settings(url)
    try:
        with pytest.raises(redis_client.RedisUnreachable):
            await redis_client.command("ping", "PING")
    finally:
        await lifespan.stop()
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "Redis refused AUTH" in logged
    assert "not-the-pw" not in logged
