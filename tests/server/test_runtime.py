"""Start-up builds the runtime once, with the lifecycles in order; shutdown stops them."""

from __future__ import annotations

from infra.runtime import Runtime, get_runtime, install_runtime
from server import runtime as composition
from usage import ledger


def test_start_up_keeps_the_runtime_the_serve_command_built(runtime):
    assert composition.start_up_runtime() is runtime


def test_start_up_replaces_a_bare_runtime_with_the_composed_one():
    bare = install_runtime(Runtime())
    built = composition.start_up_runtime()
    assert built is not bare and built.composed
    assert get_runtime() is built


class RecordingWriter:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def start(self) -> None:
        self.calls.append("ledger started")

    async def flush_and_stop(self) -> None:
        self.calls.append("ledger flushed and stopped")


async def test_start_and_stop_run_this_runtimes_parts(runtime, settings, monkeypatch):
    settings.BATCHES = {**settings.BATCHES, "run": False}
    settings.ROUTING = {**settings.ROUTING, "scrape_seconds": 0}
    calls: list[str] = []
    runtime.replace(ledger.LedgerState, ledger.LedgerState(RecordingWriter(calls)))
    await runtime.start()
    assert calls == ["ledger started"]
    await runtime.stop()
    assert calls == ["ledger started", "ledger flushed and stopped"]
