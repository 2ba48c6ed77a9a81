"""
A tiny ASGI app standing in for a gateway worker: POST /record records one request through
the recording API and answers with the worker's pid; GET /metrics is the scrape.
Served by `tests.observability.two_worker_server` with two uvicorn workers.
"""

from __future__ import annotations

import os

from observability import metrics
from observability.exposition import render_metrics

MODEL = "two-worker-model"
metrics.configure(enabled=True, models=[MODEL])


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/metrics":
        headers = dict(scope["headers"])
        body, content_type = render_metrics(headers.get(b"accept", b"").decode())
    elif scope["path"] == "/record" and scope["method"] == "POST":
        with metrics.in_flight(MODEL):
            metrics.record_request(
                model=MODEL,
                endpoint="text-completion",
                status=200,
                duration=0.2,
                ttft=0.05,
                upstream_seconds=0.19,
                prompt_tokens=7,
                completion_tokens=5,
            )
        body, content_type = str(os.getpid()).encode(), "text/plain"
    else:
        body, content_type = b"not found", "text/plain"
    await send(
        {
            "type": "http.response.start",
            "status": 404 if body == b"not found" else 200,
            "headers": [(b"content-type", content_type.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
