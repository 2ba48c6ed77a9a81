"""
Waiting for what a test is about instead of sleeping for a guessed time, and a clock to fake
where time is the behaviour.

- `wait_until(check)` / `await eventually(check)`: poll until `check()` holds, with a generous
  deadline; a slow machine only makes the test slower. On timeout the assertion names the
  last value seen.
- `FakeClock`: stands in for the `time` module of one production module
  (`monkeypatch.setattr(module, "time", clock)`); `monotonic()`, `perf_counter()` and `time()`
  move only when the test says `advance(seconds)`. Everything else is the real `time`.
- `room_in_the_minute()`: for a server in another process, whose clock cannot be faked: wait
  until the clock minute has time left, so that a few requests counted per minute fall in one
  window.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

GENEROUS = 30.0  # seconds: only a hang reaches it


def wait_until(check: Callable[[], Any], *, within: float = GENEROUS, every: float = 0.01) -> Any:
    """Poll `check()` until its value is truthy and return it; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached within {within} s (last value {value!r})")
        time.sleep(every)


async def eventually(
    check: Callable[[], Any], *, within: float = GENEROUS, every: float = 0.01
) -> Any:
    """`wait_until` on the event loop: `check` may be a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"not reached within {within} s (last value {value!r})")
        await asyncio.sleep(every)


async def eventually_equal(read: Callable[[], Any], expected: Any, **kwargs: Any) -> None:
    """Poll `read()` (sync or async) until it returns `expected`."""
    seen: list[Any] = []

    async def check() -> bool:
        value = read()
        if inspect.isawaitable(value):
            value = await value
        seen[:] = [value]
        return value == expected

    try:
        await eventually(check, **kwargs)
    except AssertionError:
        raise AssertionError(f"still {seen[0]!r}, never {expected!r}") from None


class FakeClock:
    """A `time` module whose clocks stand still until `advance`."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def room_in_the_minute(seconds: float = 10.0) -> None:
    """
    Return once at least `seconds` are left in the current clock minute (at most `seconds` of
    waiting): the requests a test sends next fall in one requests-per-minute window, as long as
    they take less than that.
    """
    wait_until(lambda: time.time() % 60 <= 60 - seconds, within=seconds + GENEROUS)
