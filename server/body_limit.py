"""
ASGI middleware that refuses oversized request bodies with 413 while they are being read.

Django's ASGI handler reads the whole body before a view runs, so a limit checked in a view
comes too late: a 1 GB upload would already be on disk. This layer checks `Content-Length`
up front and counts bytes as they arrive, answering 413 the moment a body passes the limit.
"""

from __future__ import annotations

from http import HTTPStatus

import orjson


class BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    def __init__(self, app, *, limit_for_path) -> None:
        """`limit_for_path(path) -> (max_bytes, what)`, where `what` names the limit in the 413."""
        self.app = app
        self.limit_for_path = limit_for_path

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, what = self.limit_for_path(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, limit, what, scope["path"])
            return

        received = 0
        response_started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await _send_413(send, limit, what, scope["path"])


def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send, limit: int, what: str, path: str = "") -> None:
    detail = f"The request body is larger than {limit} bytes ({what})."
    body = orjson.dumps({"detail": detail})
    if path.startswith("/v1/messages"):  # Anthropic's error shape, which its SDKs read
        body = orjson.dumps(
            {"type": "error", "error": {"type": "request_too_large", "message": detail}}
        )
    elif path.startswith("/v1/"):  # OpenAI's error shape, which its SDKs read
        body = orjson.dumps(
            {
                "error": {
                    "message": detail,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "request_too_large",
                }
            }
        )
    await send(
        {
            "type": "http.response.start",
            "status": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
