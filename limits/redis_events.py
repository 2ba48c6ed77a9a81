"""
Messages between gateway processes over Redis pub/sub: one subscriber connection per event
loop, dispatching each message to the handlers registered for its channel.

Handlers are registered once per process (at import or app start-up) and are plain callables
taking the message payload; they must be quick (they run on the event loop). The listener
reconnects by itself after Redis fails; pub/sub delivers nothing sent while a subscriber was
disconnected, so after a reconnect each channel's `on_reconnect` hook runs (revocations use it
to tell their subscribers they may have missed something).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from infra.runtime import get_runtime
from limits import redis_client

logger = logging.getLogger("limits.redis")


@dataclass
class _Channel:
    handlers: list[Callable[[bytes], None]]
    on_reconnect: list[Callable[[], None]]


# Wiring, not state: code registers its handlers once (at import or app start-up), as it
# connects a signal; they hold nothing of a request or a connection.
_channels: dict[str, _Channel] = {}  # channel suffix (without the key prefix) -> handlers


class ListenerState:
    """The runtime's listener task per event loop, and whether it is subscribed."""

    def __init__(self) -> None:
        self.listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]]
        self.listeners = weakref.WeakKeyDictionary()
        self.connected: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event]
        self.connected = weakref.WeakKeyDictionary()


def _state() -> ListenerState:
    return get_runtime().part(ListenerState)


def subscribe(
    channel: str,
    handler: Callable[[bytes], None],
    *,
    on_reconnect: Callable[[], None] | None = None,
) -> None:
    """Call `handler(payload)` for each message on `channel` (a name under the key prefix)."""
    entry = _channels.setdefault(channel, _Channel([], []))
    entry.handlers.append(handler)
    if on_reconnect is not None:
        entry.on_reconnect.append(on_reconnect)


def unsubscribe(channel: str, handler: Callable[[bytes], None]) -> None:
    entry = _channels.get(channel)
    if entry is not None and handler in entry.handlers:
        entry.handlers.remove(handler)


def ensure_listener() -> asyncio.Task[None] | None:
    """Start this event loop's listener unless it runs already (no-op without REDIS_URL)."""
    if not redis_client.enabled():
        return None
    loop = asyncio.get_running_loop()
    state = _state()
    task = state.listeners.get(loop)
    if task is None or task.done():
        state.connected[loop] = asyncio.Event()
        task = state.listeners[loop] = redis_client.spawn(
            _listen(state.connected[loop]), name="limits-redis-listener"
        )
    return task


async def wait_connected(within: float) -> bool:
    """Wait until the listener has subscribed (tests and start-up); False on timeout."""
    ensure_listener()
    event = _state().connected.get(asyncio.get_running_loop())
    if event is None:
        return False
    try:
        async with asyncio.timeout(within):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def stop_listener() -> None:
    task = _state().listeners.pop(asyncio.get_running_loop(), None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _listen(connected: asyncio.Event) -> None:
    backoff = 0.05
    ever_connected = False
    while not redis_client.stopping():
        pubsub = None
        try:
            pubsub = redis_client.client().pubsub()
            subscribed = {redis_client.key(name): name for name in _channels}
            async with asyncio.timeout(1.0):
                await pubsub.subscribe(*subscribed)
            connected.set()
            if ever_connected:
                for entry in list(_channels.values()):
                    for hook in list(entry.on_reconnect):
                        _run(hook)
            ever_connected = True
            backoff = 0.05
            while not redis_client.stopping():
                if len(subscribed) != len(_channels):  # a channel registered since
                    new = {
                        redis_client.key(n): n
                        for n in _channels
                        if redis_client.key(n) not in subscribed
                    }
                    await pubsub.subscribe(*new)
                    subscribed.update(new)
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message["type"] != "message":
                    continue
                name = subscribed.get(message["channel"].decode())
                channel = _channels.get(name) if name is not None else None
                for handler in list(channel.handlers if channel else ()):
                    _run(handler, message["data"])
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            connected.clear()
            redis_client.note_failure(exc, "pub/sub")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
        finally:
            if pubsub is not None:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await pubsub.aclose()


def _run(function: Callable[..., None], *args: object) -> None:
    try:
        function(*args)
    except Exception:  # one faulty handler must not stop the others or the listener
        logger.exception("pub/sub handler %r failed", function)
