"""
Per-request timing, kept in a contextvar so that any layer can mark a phase without being
handed an object: the middleware calls `start()`, the limiter wraps its wait in
`span("queue")`, the upstream client calls `begin("upstream_ttfb")` before it sends and
`end("upstream_ttfb")` at the first byte. The middleware then turns it into a `Server-Timing`
header (shown by browsers' developer tools) and `x-llmapi-*-ms` headers.

Django serves each request in a task of its own, and streams its body from that task, so the
timing started for a request is the one every layer of that request sees.

The request's summary fields (model, team, tokens, ...) ride along in `fields`, so the layer
that knows them can say so (`annotate(model=..., completion_tokens=...)`) and the middleware
records them once, when the request ends.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Phases that appear in the headers, in this order. Names are fixed here: nothing a client
# sends becomes a header.
HEADER_PHASES = ("queue", "upstream_ttfb")


class RequestTiming:
    __slots__ = ("_open", "durations", "fields", "started")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.durations: dict[str, float] = {}
        self._open: dict[str, float] = {}
        self.fields: dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def begin(self, name: str) -> None:
        self._open[name] = time.perf_counter()

    def end(self, name: str) -> float:
        """Close a phase: its time since `begin(name)`, added to any earlier time of that name."""
        began = self._open.pop(name, None)
        seconds = time.perf_counter() - (self.started if began is None else began)
        self.add(name, seconds)
        return seconds

    def mark(self, name: str) -> float:
        """A phase ends now: measured from `begin(name)` if it was begun, else from the start."""
        return self.end(name)

    def add(self, name: str, seconds: float) -> None:
        self.durations[name] = self.durations.get(name, 0.0) + seconds

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)

    def annotate(self, **fields: Any) -> None:
        self.fields.update(fields)


_current: contextvars.ContextVar[RequestTiming | None] = contextvars.ContextVar(
    "llmapi_request_timing", default=None
)


def start() -> RequestTiming:
    timing = RequestTiming()
    _current.set(timing)
    return timing


def current() -> RequestTiming | None:
    return _current.get()


def begin(name: str) -> None:
    timing = _current.get()
    if timing is not None:
        timing.begin(name)


def end(name: str) -> None:
    timing = _current.get()
    if timing is not None:
        timing.end(name)


def mark(name: str) -> None:
    timing = _current.get()
    if timing is not None:
        timing.mark(name)


def mark_once(name: str) -> None:
    """`mark(name)` the first time only: a request has one first token, whatever retries."""
    timing = _current.get()
    if timing is not None and name not in timing.durations:
        timing.mark(name)


def add(name: str, seconds: float) -> None:
    timing = _current.get()
    if timing is not None:
        timing.add(name, seconds)


@contextmanager
def span(name: str) -> Iterator[None]:
    timing = _current.get()
    if timing is None:
        yield
        return
    with timing.span(name):
        yield


def annotate(**fields: Any) -> None:
    timing = _current.get()
    if timing is not None:
        timing.fields.update(fields)


def annotate_principal(principal: Any) -> None:
    """
    Who is calling, from whatever authenticated the request: a database key (team, key id,
    public prefix), an operator key (no team), a staff session or nobody (neither).
    """
    timing = _current.get()
    if timing is None:
        return
    key_id = getattr(principal, "key_id", None)
    timing.fields.update(
        team=getattr(principal, "team_name", None) or None,
        key_id=None if key_id is None else str(key_id),
        key_prefix=getattr(principal, "prefix", None) or None,
    )


def _phases(timing: RequestTiming) -> list[tuple[str, float]]:
    phases = [(name, timing.durations[name]) for name in HEADER_PHASES if name in timing.durations]
    phases.append(("total", timing.elapsed()))
    return phases


def response_headers(timing: RequestTiming) -> dict[str, str]:
    """`Server-Timing` and the `x-llmapi-*-ms` headers, from one reading of the clock."""
    phases = [(name, f"{seconds * 1000:.1f}") for name, seconds in _phases(timing)]
    headers = {f"x-llmapi-{name.replace('_', '-')}-ms": ms for name, ms in phases}
    headers["Server-Timing"] = ", ".join(f"{name};dur={ms}" for name, ms in phases)
    return headers
