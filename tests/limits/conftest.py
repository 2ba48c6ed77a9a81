"""A real redis-server per test module (or per test, for outages), and settings pointing at it."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from limits import lifespan, redis_client, redis_counters
from tests.redis_server import REDIS_SERVER, RedisSentinel, RedisServer
from tests.teams import key_pepper, make_key, team  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


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
        # Short, as in production, but not so short that a busy test machine times out.
        "connect_timeout": 1.0,
        "timeout": 2.0,
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
    yield redis_server
    await lifespan.stop()


@pytest.fixture(scope="module")
def redis_sentinel(redis_server):
    """A Sentinel naming the module's redis-server as the master of its service."""
    sentinel = RedisSentinel(redis_server)
    sentinel.start()
    yield sentinel
    sentinel.stop()


@pytest.fixture
async def use_redis_py(settings, redis_server, redis_sentinel):
    """`use_redis` through the redis-py transport, finding the server through Sentinel."""
    redis_server.command("FLUSHALL")
    settings.SHARED_LIMITS = shared_limits_settings(redis_sentinel.url(), client="redis-py")
    yield redis_server
    await lifespan.stop()


# The transports the shared limits' contract tests run through (`limits.redis_transport`).
TRANSPORTS = {"redis": "use_redis", "redis-py": "use_redis_py"}


@pytest.fixture
async def use_own_redis(settings, own_redis_server):
    settings.SHARED_LIMITS = shared_limits_settings(own_redis_server.url)
    yield own_redis_server
    await lifespan.stop()


class Worker:
    """A `tests.limits.redis_worker` process: another gateway process using the same Redis."""

    def __init__(self, url: str, mode: str, *args: object, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.limits.redis_worker", mode, *map(str, args)],
            cwd=ROOT,
            env={
                **os.environ,
                "ENV_FILE": "/dev/null",
                "DJANGO_SETTINGS_MODULE": "llmapi.settings",
                "REDIS_URL": url,
                "LIMITS__REDIS_KEY_PREFIX": "test",
                "LIMITS__REDIS_RETRY_SECONDS": "0.2",
                # Generous: these tests check counting on a busy machine, where a burst of
                # connections can take longer than the production timeouts (tested apart).
                "LIMITS__REDIS_CONNECT_TIMEOUT": "10",
                "LIMITS__REDIS_TIMEOUT": "10",
                "LIMITS__ON_REDIS_ERROR": "closed",
                **env,
            },
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def message(self, timeout: float = 60) -> dict:
        """The next JSON line the worker prints."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message from the worker within {timeout} s") from None
        if line is None:
            assert self.process.stderr is not None
            raise AssertionError(f"the worker exited: {self.process.stderr.read()[-3000:]}")
        return json.loads(line)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


# How the counters' scripts read the Redis server's clock (when no `now` is passed).
REDIS_NOW = re.compile(
    r"local t = redis\.call\('TIME'\)\n(\s*)(local )?now = tonumber\(t\[1\]\) \* 1000 "
    r"\+ math\.floor\(tonumber\(t\[2\]\) / 1000\)"
)
FAKE_NOW = r"\2now = tonumber(redis.call('GET', 'fake-clock-ms'))"
MINUTE_START = 1_699_999_980.0  # a multiple of 60 s (and of every bucket the tests use)


class RedisClock:
    """The counters' clock, faked: their scripts read the time from a Redis key, set here."""

    def __init__(self, server: RedisServer, seconds: float) -> None:
        self.server = server
        self.set(seconds)

    def set(self, seconds: float) -> None:
        self.seconds = seconds
        self.server.command("SET", "fake-clock-ms", str(round(seconds * 1000)))

    def advance(self, seconds: float) -> None:
        self.set(self.seconds + seconds)


@pytest.fixture
def redis_clock(use_redis, monkeypatch) -> RedisClock:
    """
    Freeze the clock of `limits.redis_counters` (the quota windows) at a minute's start,
    2023-11-14 22:13:00 UTC, until the test moves it.
    """
    for name in ("_RESERVE", "_SETTLE"):
        faked, found = REDIS_NOW.subn(FAKE_NOW, getattr(redis_counters, name))
        assert found == 1, f"redis_counters.{name} no longer reads TIME as expected"
        monkeypatch.setattr(redis_counters, name, faked)
    return RedisClock(use_redis, MINUTE_START)


@pytest.fixture
def pipelines(monkeypatch):
    """What each Redis round trip carried, by the names of its script calls."""
    sent: list[list[str]] = []
    original = redis_client._commands

    def recording(calls, load):
        sent.append([each.what for each in calls])
        return original(calls, load)

    monkeypatch.setattr(redis_client, "_commands", recording)
    return sent


@pytest.fixture
def workers():
    started: list[Worker] = []

    def start(url: str, mode: str, *args: object, **env: str) -> Worker:
        worker = Worker(url, mode, *args, **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
