"""ASGI lifespan: what the gateway does when the server starts and stops."""

from __future__ import annotations

import asyncio
import gc
import logging

from django.conf import settings

from inference.registry import get_registry
from infra.runtime import get_runtime
from observability import metrics
from server.reload import install_reload_signal
from server.runtime import start_up_runtime

logger = logging.getLogger(__name__)


async def on_startup() -> None:
    runtime = start_up_runtime()  # the process's state, in one object
    registry = get_registry()  # reads and checks the catalog: a broken one stops the start
    metrics.register_models(spec.name for spec in registry.catalog)
    for spec in registry.catalog:
        if spec.is_embedded:
            await asyncio.to_thread(registry.backend, spec)  # loads the model file
    install_reload_signal()
    # The ledger's writer, the shared limits (Redis: revocations, slot wake-ups, replica
    # health), the model servers' load readings, the batch runner (BATCHES__RUN).
    await runtime.start()
    tune_garbage_collector()


# Objects a request allocates are freed by reference counting; the cycle collector only has to
# find the rare cycles. Keep what start-up loaded (Django, DRF, the catalog) out of its scans,
# run it as `SERVER__GC_THRESHOLDS` says, and time every collection (`llmapi_gc_pause_seconds`).


def tune_garbage_collector() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.SERVER_GC_THRESHOLDS)
    if metrics.time_collection not in gc.callbacks:
        gc.callbacks.append(metrics.time_collection)


async def on_shutdown() -> None:
    # The server calls this after in-flight requests and streams have finished (or the
    # graceful timeout passed): their ledger rows are queued, and written here.
    await get_runtime().stop()


class LifespanMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await on_startup()
                except Exception as exc:  # noqa: BLE001 (reported to the server, which exits)
                    logger.error("Start-up failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
