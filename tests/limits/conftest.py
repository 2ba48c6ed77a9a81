"""A real redis-server per test module (or per test, for outages), and settings pointing at it."""

from __future__ import annotations

import pytest

from limits import redis_client, redis_events
from tests.redis_server import REDIS_SERVER, RedisServer

needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not installed (scripts/test installs Debian's redis-server)",
)


@pytest.fixture(scope="module")
def redis_server():
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (scripts/test installs Debian's redis-server)")
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis_server():
    """A server of this test alone, which it may kill and restart."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (scripts/test installs Debian's redis-server)")
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def shared_limits_settings(url: str, **overrides) -> dict:
    return {
        "url": url,
        "connect_timeout": 0.1,
        "timeout": 0.2,
        "max_connections": 64,
        "key_prefix": "test",
        "on_redis_error": "open",
        "lease_seconds": 10.0,
        "retry_seconds": 0.2,
        **overrides,
    }


@pytest.fixture
async def use_redis(settings, redis_server):
    """Point the shared limits at the module's redis-server, with an empty database."""
    redis_server.command("FLUSHALL")
    settings.SHARED_LIMITS = shared_limits_settings(redis_server.url)
    redis_client.reset_state_for_tests()
    yield redis_server
    await redis_events.stop_listener()
    await redis_client.close()


@pytest.fixture
async def use_own_redis(settings, own_redis_server):
    settings.SHARED_LIMITS = shared_limits_settings(own_redis_server.url)
    redis_client.reset_state_for_tests()
    yield own_redis_server
    await redis_events.stop_listener()
    await redis_client.close()
