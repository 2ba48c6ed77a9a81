"""
The Redis connection the shared limits use, and what happens when Redis fails.

`REDIS_URL` turns shared limits on; without it every limit is counted per process. Each event
loop has one transport for the limits' scripts and commands (`limits.redis_transport`: the
pipelined connection of `limits.redis_connection`, or redis-py's client, which Sentinel URLs
use) and a redis-py client for pub/sub, both with short explicit timeouts, so a dead or unreachable Redis costs a request at most about `connect + read`
timeout, never a hang. After a failure Redis is left alone for `retry_seconds`
(the policy below applies at once, without a round trip), then tried again: limits recover
without a restart.

`LIMITS__ON_REDIS_ERROR` is the policy when Redis cannot be reached:
- `open`: admit, counting nothing (availability first; limits are not enforced meanwhile);
- `closed`: refuse with `LimitsUnavailable` (the API answers 503).

Each failure is logged once per `LOG_EVERY` seconds at most, with the number of failures since
the previous line, and recovery is logged once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

import redis.asyncio as redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from infra.runtime import get_runtime
from limits.exceptions import LimitsUnavailable
from limits.per_loop import PerLoop, running_loop
from limits.redis_connection import ReplyError
from limits.redis_transport import (
    CLIENTS,
    SentinelAddress,
    Transport,
    is_sentinel,
    new_transport,
    redis_py_client,
)

logger = logging.getLogger("limits.redis")

T = TypeVar("T")

LOG_EVERY = 10.0  # seconds between two log lines about the same outage


@dataclass(frozen=True)
class RedisConfig:
    url: str = ""
    connect_timeout: float = 0.2
    timeout: float = 0.2  # each command's reply
    max_connections: int = 64  # redis-py's pool, for pub/sub
    key_prefix: str = "llmapi"
    on_redis_error: Literal["open", "closed"] = "open"
    lease_seconds: float = 10.0  # a concurrency slot's lease; a crashed holder frees it after this
    retry_seconds: float = 1.0  # after a failure, Redis is not tried again for this long
    client: str = "pipelined"  # the transport of scripts and commands (`limits.redis_transport`)
    batch_headroom: int = 1  # slots batch work leaves free while interactive work is present
    batch_headroom_seconds: float = 2.0  # interactive work is present this long after it ended
    batch_preempt: bool = (
        True  # in-process slots only (`limits.slots`); shared ones keep the headroom
    )

    @classmethod
    def from_settings(cls) -> RedisConfig:
        values = dict(getattr(settings, "SHARED_LIMITS", {}))
        config = cls(**values)
        if config.on_redis_error not in ("open", "closed"):
            raise ImproperlyConfigured(
                f"LIMITS__ON_REDIS_ERROR must be 'open' or 'closed', not {config.on_redis_error!r}."
            )
        if config.client not in CLIENTS:
            raise ImproperlyConfigured(
                f"LIMITS__REDIS_CLIENT must be one of {', '.join(CLIENTS)}, not {config.client!r}."
            )
        if config.batch_headroom < 0 or config.batch_headroom_seconds < 0:
            raise ImproperlyConfigured(
                "LIMITS__BATCH_HEADROOM and LIMITS__BATCH_HEADROOM_SECONDS must not be negative."
            )
        if is_sentinel(config.url):
            try:
                SentinelAddress.from_url(config.url)
            except ValueError as exc:  # the URL's shape only: never its password
                raise ImproperlyConfigured(f"REDIS_URL: {exc}.") from None
        return config


class RedisSettings:
    """The runtime's configuration, read when built (again whenever SHARED_LIMITS changes)."""

    SETTINGS = ("SHARED_LIMITS",)

    def __init__(self) -> None:
        self.config = RedisConfig.from_settings()


def config() -> RedisConfig:
    """The configuration (SHARED_LIMITS) as the runtime read it."""
    return get_runtime().part(RedisSettings).config


def enabled() -> bool:
    """True when REDIS_URL is set: limits are shared through Redis."""
    return bool(config().url)


def key(*parts: str) -> str:
    """A Redis key under this deployment's prefix (several gateways may share one Redis)."""
    return ":".join((config().key_prefix, *parts))


class RedisUnreachable(Exception):
    """A Redis call failed or Redis is in its retry pause. Callers apply the error policy."""


def unavailable() -> LimitsUnavailable | None:
    """The error to raise when Redis is unreachable: None under `open` (admit uncounted)."""
    if config().on_redis_error == "closed":
        return LimitsUnavailable()
    return None


# --- one client per event loop -------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    """A script call waiting for the next pipeline."""

    what: str
    source: str
    keys: list[str]
    args: list[Any]
    future: asyncio.Future[Any]


@dataclass
class _LoopClient:
    config: RedisConfig
    client: redis.Redis  # pub/sub
    connection: Transport  # everything else
    retired: list[redis.Redis | Transport] = field(default_factory=list)  # to close at `close`
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)  # background work on this loop
    queued: list[_Call] = field(default_factory=list)  # script calls for the next pipeline
    later: list[_Call] = field(default_factory=list)  # calls whose replies nobody waits for
    later_timer: asyncio.TimerHandle | None = None
    sending: set[asyncio.Future[Any]] = field(default_factory=set)  # pipelines on their way
    before_send: list[Callable[[], None]] = field(default_factory=list)  # see `on_next_send`
    before_send_timer: asyncio.TimerHandle | None = None
    loaded: set[str] = field(default_factory=set)  # scripts Redis is known to have


def _new_loop_client() -> _LoopClient:
    cfg = config()
    return _LoopClient(cfg, _new_client(cfg), _new_connection(cfg))


class RedisState:
    """The runtime's clients (one per event loop) and what it knows of Redis's health."""

    def __init__(self) -> None:
        self.clients: PerLoop[_LoopClient] = PerLoop(_new_loop_client)
        self.health = _Health()


def _state() -> RedisState:
    return get_runtime().part(RedisState)


def _new_client(cfg: RedisConfig) -> redis.Redis:
    # One immediate retry on a new connection: after a Redis restart (or a failover) the
    # pooled connections are dead, and the first command on each would fail otherwise.
    return redis_py_client(
        cfg.url,
        max_connections=cfg.max_connections,
        connect_timeout=cfg.connect_timeout,
        timeout=cfg.timeout,
        retries=1,
    )


def _new_connection(cfg: RedisConfig) -> Transport:
    return new_transport(
        cfg.url, client=cfg.client, connect_timeout=cfg.connect_timeout, timeout=cfg.timeout
    )


def _loop_client() -> _LoopClient:
    entry = _state().clients.get()
    cfg = config()
    if entry.config is not cfg and entry.config != cfg:
        # Settings replaced (tests): new ones, the old client closed later.
        entry.retired.append(entry.client)
        entry.retired.append(entry.connection)
        entry.connection.close()
        entry.config, entry.client = cfg, _new_client(cfg)
        entry.connection = _new_connection(cfg)
        entry.loaded.clear()
    return entry


def client() -> redis.Redis:
    """This event loop's redis-py client, for pub/sub (created on first use). Requires REDIS_URL."""
    return _loop_client().client


def spawn(coroutine: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """
    Run background work of the shared limits on this loop (a listener, a refresher, lease
    renewals, a waiter leaving the line); `close` cancels whatever still runs.
    """
    task = running_loop().create_task(coroutine, name=name)
    tasks = _loop_client().tasks
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def close() -> None:
    """
    Lifespan shutdown: stop this loop's background work, then close its client. Without
    REDIS_URL there is nothing to do.
    """
    entry = _state().clients.peek()
    if entry is None:
        return
    # Releases and settlements sent after their answers went out are delivered first.
    await flush()
    while entry.tasks:
        tasks = list(entry.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    _state().clients.pop()
    entry.connection.close()
    for old in (*entry.retired, entry.client, entry.connection):
        await old.aclose()


# --- failures: pause, log, recover ---------------------------------------------------------


class _Health:
    def __init__(self) -> None:
        self.down_since: float | None = None
        self.retry_at = 0.0
        self.last_log = float("-inf")
        self.failures_unlogged = 0

    def paused(self) -> bool:
        return self.down_since is not None and time.monotonic() < self.retry_at

    def failed(self, exc: BaseException, what: str, cfg: RedisConfig) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        self.retry_at = now + cfg.retry_seconds
        self.failures_unlogged += 1
        if now - self.last_log >= LOG_EVERY:
            action = "admitting uncounted" if cfg.on_redis_error == "open" else "refusing (503)"
            # The error's own words help (a refused AUTH, a refused connection) and hold no
            # secret: connection errors never carry the password.
            logger.error(
                "Redis unreachable (%s during %s; %d failure(s) since the last report); "
                "LIMITS__ON_REDIS_ERROR=%s: %s until it is back",
                f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__,
                what,
                self.failures_unlogged,
                cfg.on_redis_error,
                action,
            )
            self.last_log = now
            self.failures_unlogged = 0

    def succeeded(self) -> None:
        if self.down_since is not None:
            logger.warning(
                "Redis reachable again after %.1f s; shared limits apply",
                time.monotonic() - self.down_since,
            )
            self.down_since = None
            self.failures_unlogged = 0
            self.last_log = float("-inf")


def healthy() -> bool:
    """Whether Redis answered the last exchange (no outage is under way)."""
    return _state().health.down_since is None


def note_failure(exc: BaseException, what: str) -> None:
    """Record a failure seen outside `call` (the pub/sub listener)."""
    _state().health.failed(exc, what, config())


async def _guarded(what: str, operation: Callable[[], Awaitable[T]]) -> T:
    """
    Run one exchange with Redis under the failure rules: raise `RedisUnreachable` at once
    while Redis is paused after a failure, and on any network error or timeout (the
    connection bounds each step: connecting, and each batch's replies).
    """
    if _state().health.paused():
        raise RedisUnreachable(what)
    try:
        result = await operation()
    except (OSError, TimeoutError) as exc:  # ConnectionError is an OSError
        _state().health.failed(exc, what, config())
        raise RedisUnreachable(what) from exc
    _state().health.succeeded()
    return result


async def command(what: str, *args: Any) -> Any:
    """
    One Redis command (PUBLISH, PING, ...) under the failure rules, on this loop's pipelined
    connection. An error reply raises `RedisUnreachable` too.
    """
    connection = _loop_client().connection
    (reply,) = await _guarded(what, lambda: connection.execute([args]))
    if isinstance(reply, ReplyError):
        _state().health.failed(reply, what, config())
        raise RedisUnreachable(what)
    return reply


def stopping() -> bool:
    """Whether the current task was asked to stop (for the background loops)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def run_script(what: str, source: str, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
    """
    Run a Lua script under the failure rules of `_guarded`: a future of its reply (raises
    `RedisUnreachable` at once while Redis is paused after a failure).

    Calls are not sent one by one: every call made while the event loop runs one round of
    ready work goes out in the next pipeline (`EVALSHA`s, one write and one read), so a
    request's start (its quota and its model slot) or end costs one round trip, and under
    load many requests share one. A script unknown to Redis (after a restart) is loaded and
    run again in a second round trip.
    """
    if _state().health.paused():
        raise RedisUnreachable(what)
    return _queue(what, source, keys, args)


# How long a call nobody waits for may wait for a pipeline to ride along with.
LATER_SECONDS = 0.005


def run_script_later(what: str, source: str, keys: list[str], args: list[Any]) -> None:
    """
    `run_script` without waiting for the reply: for work after an answer went out (a slot's
    release, a quota's settlement), so that its round trip is not the client's. It rides
    along with the next pipeline (the next request's), or goes on its own within
    LATER_SECONDS. A failure is logged by the failure rules and otherwise dropped (leases and
    windows expire by themselves). `close` delivers what is still queued.
    """
    if _state().health.paused():
        return
    loop = running_loop()
    entry = _loop_client()
    future = loop.create_future()
    future.add_done_callback(_drop_outcome)
    entry.later.append(_Call(what, source, keys, args, future))
    if entry.later_timer is None:
        entry.later_timer = loop.call_later(LATER_SECONDS, _send_queued, entry)


def on_next_send(callback: Callable[[], None], *, within: float) -> bool:
    """
    Call `callback` just before the next pipeline goes out (another request's, or on its own
    within `within` seconds), for work nobody waits for that is merged until then
    (settlements of one counter add up) and then queued with `run_script_later`. False, and
    nothing is called, while Redis is paused after a failure.
    """
    if _state().health.paused():
        return False
    entry = _loop_client()
    entry.before_send.append(callback)
    if entry.before_send_timer is None:
        entry.before_send_timer = running_loop().call_later(within, _send_queued, entry)
    return True


def _drop_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: no "exception was never retrieved" warning


def _queue(what: str, source: str, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
    loop = running_loop()
    entry = _loop_client()
    future = loop.create_future()
    if not entry.queued:
        loop.call_soon(_send_queued, entry)
    entry.queued.append(_Call(what, source, keys, args, future))
    return future


def _send_queued(entry: _LoopClient) -> None:
    before, entry.before_send = entry.before_send, []
    if entry.before_send_timer is not None:
        entry.before_send_timer.cancel()
        entry.before_send_timer = None
    for callback in before:
        callback()  # queues its merged work with run_script_later
    # Calls nobody waits for were made first: they go first.
    calls, entry.later, entry.queued = entry.later + entry.queued, [], []
    if entry.later_timer is not None:
        entry.later_timer.cancel()
        entry.later_timer = None
    if not calls:
        return
    connection = entry.connection
    if connection.ready and all(_sha(c.source) in entry.loaded for c in calls):
        # The usual case: written at once, the replies handed out when they come.
        batch = connection.submit(_commands(calls, ()))
        entry.sending.add(batch)
        batch.add_done_callback(partial(_sent, entry, calls))
        return
    _send_later(entry, calls)


def _send_later(entry: _LoopClient, calls: list[_Call]) -> None:
    """Send `calls` from a task: to connect first, or to load scripts."""
    task = running_loop().create_task(_send(entry, calls), name="redis-pipeline")
    entry.sending.add(task)
    task.add_done_callback(entry.sending.discard)


def _what(calls: list[_Call]) -> str:
    return calls[0].what if len(calls) == 1 else f"{len(calls)} calls ({calls[0].what}, ...)"


def _sent(entry: _LoopClient, calls: list[_Call], batch: asyncio.Future[list[Any]]) -> None:
    """The replies of a batch written by `_send_queued`, under the failure rules of `_guarded`."""
    entry.sending.discard(batch)
    if batch.cancelled():
        _fail(calls, None)
        return
    error = batch.exception()
    if error is not None:
        _state().health.failed(error, _what(calls), config())
        _fail(calls, RedisUnreachable)
        return
    _state().health.succeeded()
    replies = batch.result()
    answered = list(zip(calls, replies, strict=True))
    lost = [each for each, reply in answered if _no_script(reply)]
    if lost:  # Redis restarted and lost its scripts: load them and run those calls again
        entry.loaded.clear()
        _send_later(entry, lost)
    _deliver((each, reply) for each, reply in answered if not _no_script(reply))


def _fail(calls: list[_Call], error: type[RedisUnreachable] | None) -> None:
    """Fail every call still waited for (cancel them if `error` is None)."""
    for each in calls:
        if not each.future.done():
            if error is None:
                each.future.cancel()
            else:
                each.future.set_exception(error(each.what))


def _deliver(answered: Iterable[tuple[_Call, Any]]) -> None:
    """Each call's reply to its caller; an error reply as RedisUnreachable."""
    for each, reply in answered:
        if each.future.done():  # its caller went away
            continue
        if isinstance(reply, Exception):
            _state().health.failed(reply, each.what, config())
            each.future.set_exception(RedisUnreachable(each.what))
        else:
            each.future.set_result(reply)


async def _send(entry: _LoopClient, calls: list[_Call]) -> None:
    try:
        replies = await _guarded(
            _what(calls), lambda: _pipeline(entry.connection, calls, entry.loaded)
        )
    except RedisUnreachable:
        _fail(calls, RedisUnreachable)
        return
    except asyncio.CancelledError:
        _fail(calls, None)
        raise
    _deliver(zip(calls, replies, strict=True))


async def _pipeline(connection: Transport, calls: list[_Call], loaded: set[str]) -> list[Any]:
    """
    One round trip for all `calls`, in order. A script's first use loads it in the same
    pipeline, ahead of the calls. If Redis lost scripts it was known to have (a restart),
    those calls are run again after loading them: a second round trip, and in that one case
    they run after the calls that followed them in the pipeline.
    """
    load = {c.source for c in calls if _sha(c.source) not in loaded}
    replies = await _execute(connection, calls, load)
    missing = [i for i, reply in enumerate(replies) if _no_script(reply)]
    if missing:
        loaded.clear()
        again = [calls[i] for i in missing]
        retried = await _execute(connection, again, {c.source for c in again})
        for i, reply in zip(missing, retried, strict=True):
            replies[i] = reply
    loaded.update(_sha(c.source) for c in calls)
    return replies


def _no_script(reply: Any) -> bool:
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


async def _execute(connection: Transport, calls: list[_Call], load: set[str]) -> list[Any]:
    """One pipeline: `SCRIPT LOAD` for the sources in `load`, then the calls; their replies."""
    return (await connection.execute(_commands(calls, load)))[len(load) :]


def _commands(calls: list[_Call], load: Collection[str]) -> list[tuple[Any, ...]]:
    """`SCRIPT LOAD` for the sources in `load`, then an `EVALSHA` per call."""
    commands: list[tuple[Any, ...]] = [("SCRIPT", "LOAD", source) for source in load]
    for each in calls:
        commands.append((b"EVALSHA", _sha(each.source), len(each.keys), *each.keys, *each.args))
    return commands


# A memo of a pure function (a script's SHA1), process-wide by nature.
_shas: dict[str, str] = {}


def _sha(source: str) -> str:
    sha = _shas.get(source)
    if sha is None:
        sha = _shas[source] = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis's)
    return sha


async def flush() -> None:
    """Send what is queued and wait for the pipelines on their way (at shutdown)."""
    entry = _state().clients.peek()
    if entry is None:
        return
    _send_queued(entry)
    if entry.sending:
        await asyncio.wait(list(entry.sending))


async def redis_status() -> dict[str, Any]:
    """
    For /readyz: `{"redis": "ok" | "down" | "off", "mode": "open" | "closed"}`; "off" when
    REDIS_URL is not set. Pings Redis (bounded by the short timeouts).
    """
    cfg = config()
    if not enabled():
        return {"redis": "off", "mode": cfg.on_redis_error}
    try:
        await command("ping", "PING")
    except RedisUnreachable:
        return {"redis": "down", "mode": cfg.on_redis_error}
    return {"redis": "ok", "mode": cfg.on_redis_error}
