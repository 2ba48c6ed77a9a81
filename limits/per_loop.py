"""
State kept per event loop by the shared limits (a connection, leases, settlements waiting),
and the running loop itself, found cheaply (`running_loop`).

A worker process runs one event loop, but tests run many, one after another: state created on
one loop must never be used on another, and goes with its loop. The last loop's state is
remembered, since looking it up in a `WeakKeyDictionary` (a weak reference made per lookup)
is a noticeable part of a request's cost in the limits.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Running(threading.local):
    loop: asyncio.AbstractEventLoop | None = None


_running = _Running()
os.register_at_fork(after_in_child=lambda: setattr(_running, "loop", None))


def running_loop() -> asyncio.AbstractEventLoop:
    """
    `asyncio.get_running_loop()` without its system call: Python 3.11 checks the process id
    (getpid) on every call, and the limits ask for the loop about twenty times per request.
    A thread runs one loop at a time, so the loop this thread last found is still the running
    one while it runs.
    """
    loop = _running.loop
    if loop is not None and loop.is_running():
        return loop
    loop = _running.loop = asyncio.get_running_loop()
    return loop


class PerLoop(Generic[T]):
    """One `factory()` value per event loop, made on first use."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        self._last_loop: asyncio.AbstractEventLoop | None = None
        self._last: T | None = None

    def get(self) -> T:
        """The running loop's value (made now if it has none)."""
        loop = running_loop()
        if loop is self._last_loop:
            return self._last  # type: ignore[return-value]
        value = self._values.get(loop)
        if value is None:
            value = self._values[loop] = self._factory()
        self._last_loop, self._last = loop, value
        return value

    def peek(self) -> T | None:
        """The running loop's value, or None if it has none (nothing is made)."""
        loop = running_loop()
        if loop is self._last_loop:
            return self._last
        return self._values.get(loop)

    def pop(self) -> T | None:
        """Forget the running loop's value, and return it."""
        loop = running_loop()
        if loop is self._last_loop:
            self._last_loop, self._last = None, None
        return self._values.pop(loop, None)
