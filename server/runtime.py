"""
The runtime's composition: which parts have a lifecycle, and in what order they start and stop.

`infra.runtime` holds the process's state, each app's part by kind; this module, high enough to
know every app, lists the lifecycles. The ASGI lifespan builds the runtime at start-up (the
`serve` command builds it first, to check the catalog before any worker starts) and stops it at
shutdown; tests build a fresh one for each test.
"""

from __future__ import annotations

from batches import runner as batch_runner
from inference import replica_load
from inference.backends.openai_http import close_transports
from infra.runtime import Runtime, get_runtime, install_runtime
from limits import lifespan as shared_limits
from usage import ledger


async def _start_ledger() -> None:
    ledger.start()  # the usage ledger's writer thread


async def _start_replica_load() -> None:
    replica_load.start()  # the model servers' own load, read on an interval


async def _start_shared_limits() -> None:
    await shared_limits.start()  # Redis: revocations, slot wake-ups, replica health


def build_runtime() -> Runtime:
    """A new runtime with the lifecycles in order (nothing is built or started yet)."""
    return Runtime(
        starts=[
            ("ledger", _start_ledger),
            ("shared limits", _start_shared_limits),
            ("replica load", _start_replica_load),
            ("batch runner", batch_runner.start),
        ],
        # Batch lines still running are stopped first and given back for another process to
        # run; then the ledger rows queued by the requests that finished are written.
        stops=[
            ("batch runner", batch_runner.stop),
            ("ledger", ledger.flush_and_stop),
            ("replica load", replica_load.stop),
            ("shared limits", shared_limits.stop),
            ("model server connections", close_transports),
        ],
    )


def start_up_runtime() -> Runtime:
    """The process's runtime as start-up builds it: the one in place if it is, else a new one."""
    runtime = get_runtime()
    if not runtime.composed:
        runtime = install_runtime(build_runtime())
    return runtime
