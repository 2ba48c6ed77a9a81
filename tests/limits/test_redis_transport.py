"""
The transports of the shared limits (`limits.redis_transport`): which one a URL and
`LIMITS__REDIS_CLIENT` choose, Sentinel URLs, redis-py's batches in order with their error
replies in place, outages, and a Sentinel failover survived like an outage.
"""

from __future__ import annotations

import asyncio

import pytest
from django.core.exceptions import ImproperlyConfigured

from limits import redis_client, redis_events, revocations
from limits.exceptions import LimitsUnavailable
from limits.redis_connection import PipelinedConnection, ReplyError
from limits.redis_slots import RedisSlots
from limits.redis_transport import (
    RedisPyTransport,
    SentinelAddress,
    SentinelCachePool,
    new_transport,
    redis_py_client,
)
from tests.fake_upstream import _free_port
from tests.limits.conftest import shared_limits_settings
from tests.redis_server import RedisSentinel, RedisServer
from tests.waiting import eventually, wait_until


def test_the_setting_chooses_the_transport_and_sentinel_takes_redis_py():
    def chosen(url: str, client: str) -> type:
        transport = new_transport(url, client=client, connect_timeout=1, timeout=1)
        transport.close()
        return type(transport)

    assert chosen("redis://127.0.0.1:1/0", "pipelined") is PipelinedConnection
    assert chosen("unix:///run/redis.sock", "pipelined") is PipelinedConnection
    assert chosen("redis://127.0.0.1:1/0", "redis-py") is RedisPyTransport
    assert chosen("redis+sentinel://127.0.0.1:1/limits", "pipelined") is RedisPyTransport


def test_an_unknown_client_setting_names_the_setting(settings):
    settings.SHARED_LIMITS = shared_limits_settings("redis://127.0.0.1:1/0", client="hiredis")
    with pytest.raises(ImproperlyConfigured, match="LIMITS__REDIS_CLIENT"):
        redis_client.config()


def test_a_malformed_sentinel_url_is_a_configuration_error_without_the_password(settings):
    settings.SHARED_LIMITS = shared_limits_settings("redis+sentinel://:hunter2@h:26379")
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL: a Sentinel URL reads") as caught:
        redis_client.config()
    assert "hunter2" not in str(caught.value)


def test_a_sentinel_url_names_its_sentinels_service_database_and_passwords():
    address = SentinelAddress.from_url(
        "redis+sentinel://app:s%40cret@10.0.0.1:26380,sentinel-b,[::1]:26381/limits/3"
        "?sentinel_password=watch"
    )
    assert address.sentinels == [("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381)]
    assert address.service == "limits"
    assert address.node_kwargs() == {"db": 3, "username": "app", "password": "s@cret"}
    assert address.sentinel_kwargs()["password"] == "watch"
    bare = SentinelAddress.from_url("redis+sentinel://:pw@h/svc")
    assert (bare.db, bare.username, bare.password) == (0, None, "pw")


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h:26379",  # no service
        "redis+sentinel://h:26379/svc/zero",  # a database that is not a number
        "redis+sentinel://h:port/svc",  # a port that is not a number
        "redis+sentinel:///svc",  # no Sentinel
    ],
)
def test_a_malformed_sentinel_url_is_refused(url):
    with pytest.raises(ValueError):
        SentinelAddress.from_url(url)


def test_the_session_cache_reads_a_sentinel_url():
    pool = SentinelCachePool.from_url(
        "redis+sentinel://:pw@127.0.0.1:26379/limits/2", socket_timeout=1.0
    )
    assert pool.service_name == "limits"
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "pw"


def test_the_session_cache_reaches_the_master_through_sentinel(redis_server, redis_sentinel):
    from django.core.cache.backends.redis import RedisCache

    cache = RedisCache(
        redis_sentinel.url(),
        {"OPTIONS": {"pool_class": "limits.redis_transport.SentinelCachePool"}},
    )
    cache.set("session-probe", "here", 30)
    assert cache.get("session-probe") == "here"
    assert b"session-probe" in redis_server.command("KEYS", "*session-probe")
    # Django's cache keeps its pools open for the process's life; a test closes them.
    for pool in cache._cache._pools.values():
        pool.disconnect()


def transport(url: str) -> RedisPyTransport:
    client = redis_py_client(url, max_connections=4, connect_timeout=1, timeout=2, retries=0)
    return RedisPyTransport(client, timeout=3)


async def test_batches_keep_their_order_and_share_pipelines(redis_server):
    redis_server.command("DEL", "n")
    connection = transport(redis_server.url)
    replies = await asyncio.gather(
        *(connection.execute([("INCR", "n"), ("CLIENT", "ID")]) for _ in range(50))
    )
    assert [reply[0] for reply in replies] == list(range(1, 51))
    assert len({reply[1] for reply in replies}) == 1  # one connection at a time
    await connection.aclose()


async def test_error_replies_stay_in_their_place_as_the_pipelined_connection_gives_them(
    redis_server,
):
    connection = transport(redis_server.url)
    replies = await connection.execute(
        [("SET", "e", "text"), ("INCR", "e"), ("GET", "e"), ("EVALSHA", "0" * 40, 0)]
    )
    assert replies[0] is True or replies[0] == b"OK"
    assert isinstance(replies[1], ReplyError)
    assert replies[2] == b"text"
    assert isinstance(replies[3], ReplyError) and str(replies[3]).startswith("NOSCRIPT")
    await connection.aclose()


async def test_nobody_listening_is_a_connection_error():
    connection = transport(f"redis://127.0.0.1:{_free_port()}/0")  # nobody listens there
    with pytest.raises(ConnectionError):
        await connection.execute([("PING",)])
    await connection.aclose()


async def test_scripts_lost_by_a_restart_are_loaded_again(settings, own_redis_server):
    settings.SHARED_LIMITS = shared_limits_settings(own_redis_server.url, client="redis-py")
    slots = RedisSlots("model", 1)
    async with slots.hold(queue_timeout=1):
        pass
    own_redis_server.command("SCRIPT", "FLUSH")
    async with slots.hold(queue_timeout=1):
        assert await slots.shared_counts() == (1, 0)
    await redis_client.close()


@pytest.fixture
def replicated():
    """A master, its replica and a Sentinel watching them, all this test's own."""
    master = RedisServer()
    master.start()
    replica = RedisServer(None, "--replicaof", "127.0.0.1", str(master.port))
    replica.start()
    sentinel = RedisSentinel(master)
    sentinel.start()
    yield master, replica, sentinel
    for each in (sentinel, replica, master):
        each.stop()


def fail_over(sentinel: RedisSentinel, to: RedisServer) -> None:
    """Ask the Sentinel for a failover (once it knows the replica in sync), until it is done."""

    def asked() -> bool:
        return sentinel.command("SENTINEL", "FAILOVER", sentinel.service).startswith(b"+OK")

    wait_until(asked, every=0.2)
    wait_until(lambda: sentinel.master_port() == to.port, every=0.1)


async def test_limits_keep_working_after_a_sentinel_failover(settings, replicated, received):
    master, replica, sentinel = replicated
    settings.SHARED_LIMITS = shared_limits_settings(sentinel.url(), on_redis_error="closed")
    slots = RedisSlots("model", 2)
    assert await redis_events.wait_connected(30)
    async with slots.hold(queue_timeout=5):
        assert await slots.shared_counts() == (1, 0)

    await asyncio.to_thread(fail_over, sentinel, replica)

    async def counted_on_the_new_master() -> bool:
        try:
            async with slots.hold(queue_timeout=5):
                held = replica.command("ZCARD", "{test:slots:model}:holders")
                return held == b":1\r\n" and await slots.shared_counts() == (1, 0)
        except LimitsUnavailable:  # the old master refused, or no master answered yet
            return False

    # Meanwhile the outage rules apply (closed: 503); then the new master counts.
    await eventually(counted_on_the_new_master, every=0.1)

    async def heard() -> bool:  # pub/sub followed the master too
        try:
            await revocations.publish_revocation("sk-after-failover")
        except LimitsUnavailable:
            return False
        await asyncio.sleep(0.05)
        return "sk-after-failover" in received

    await eventually(heard, every=0.2)
    await redis_client.close()


@pytest.fixture
def received():
    seen: list[str] = []
    revocations.on_revocation(seen.append)
    yield seen
    revocations.remove_callback(seen.append)
