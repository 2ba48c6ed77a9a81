"""
The runtime: the one object holding the process's state (connections, background tasks and
threads, caches of per-key data, settings read at start-up), built at start-up and replaced
whole, never reset piece by piece.

Each app owns a small state class and finds its instance with `get_runtime().part(Kind)`: one
dictionary lookup, no lock on the hot path. A part is built on first use by calling `Kind()`,
which reads the settings it needs then; parts that depend on settings name them in a
`SETTINGS` class attribute, and a change of one of those (a reload, or `override_settings` in
tests) drops the part, so the next use builds it from the new values.

    class QuotaState:
        SETTINGS = ("SHARED_LIMITS",)
        def __init__(self) -> None: ...

    get_runtime().part(QuotaState)

The lifecycles (the ledger's writer, the batch runner, the replica load poller, the shared
limits) are the runtime's `start()`/`stop()`: the composition in `server/runtime.py` lists
them in order, and the ASGI lifespan builds, starts and stops it. Tests get a fresh runtime
each (the `runtime` fixture), so nothing survives from one test to the next.

Imports no app: it sits below all of them, and knows their parts only as types.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from django.core.signals import setting_changed

T = TypeVar("T")

Lifecycle = tuple[str, Callable[[], Awaitable[Any]]]


class Runtime:
    """The process's state, by kind; `starts` and `stops` run in the order given."""

    def __init__(
        self, *, starts: Sequence[Lifecycle] = (), stops: Sequence[Lifecycle] = ()
    ) -> None:
        self._parts: dict[type, Any] = {}
        self._lock = threading.RLock()  # a part built may need others
        self._starts = tuple(starts)
        self._stops = tuple(stops)

    def part(self, kind: type[T]) -> T:
        """This runtime's `kind`, built (`kind()`) on first use."""
        try:
            return self._parts[kind]
        except KeyError:
            with self._lock:
                if kind not in self._parts:
                    self._parts[kind] = kind()
                return self._parts[kind]

    def peek(self, kind: type[T]) -> T | None:
        """This runtime's `kind` if it was built, else None (nothing is built)."""
        return self._parts.get(kind)

    def replace(self, kind: type[T], value: T) -> T:
        """Put `value` in place of `kind`'s part (a reload builds the new one first)."""
        with self._lock:
            self._parts[kind] = value
        return value

    def drop(self, kind: type) -> None:
        """Forget `kind`'s part: the next use builds it again."""
        with self._lock:
            self._parts.pop(kind, None)

    def settings_changed(self, setting: str) -> None:
        """Drop the parts built from `setting`."""
        with self._lock:
            for kind in [k for k in self._parts if setting in getattr(k, "SETTINGS", ())]:
                del self._parts[kind]

    @property
    def composed(self) -> bool:
        """Whether the runtime was built with its lifecycles (start-up's), not a bare one."""
        return bool(self._starts or self._stops)

    async def start(self) -> None:
        for _name, start in self._starts:
            await start()

    async def stop(self) -> None:
        for _name, stop in self._stops:
            await stop()


# The accessor's one slot.
_current = Runtime()


def get_runtime() -> Runtime:
    """The process's runtime."""
    return _current


def install_runtime(runtime: Runtime) -> Runtime:
    """Make `runtime` the process's runtime (at start-up; tests: a fresh one each). Returns it."""
    global _current
    _current = runtime
    return runtime


def _settings_changed(*, setting: str, **_: Any) -> None:
    _current.settings_changed(setting)


setting_changed.connect(_settings_changed, dispatch_uid="infra.runtime")
