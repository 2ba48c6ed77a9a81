"""ASGI lifespan: what the gateway does when the server starts and stops."""

from __future__ import annotations

import logging

from completions.upstream import check_upstream_credentials, close_http_clients

logger = logging.getLogger(__name__)


async def on_startup() -> None:
    from completions import local_model

    check_upstream_credentials()
    await local_model.load_at_startup()


async def on_shutdown() -> None:
    await close_http_clients()


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
