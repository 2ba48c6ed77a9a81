"""
uvicorn's httptools protocol with limits for slow and huge clients.

httptools (llhttp) puts no bound on a request's headers, and uvicorn none on how long a client
may take to send them: an 8 MB header is parsed and answered, a few 100 MB headers stall the
event loop (the parser joins each header value in Python, piece by piece), and a client that
sends half a request keeps its connection for as long as it likes. This protocol adds:

* `SERVER__MAX_HEADER_BYTES`: the request line and headers of one request may hold this many
  bytes; past it the client gets 431 and the connection is closed, and no more of its bytes are
  parsed;
* `SERVER__HEADER_TIMEOUT`: they must arrive within this many seconds of the connection opening
  (or of the previous request's end), or the client gets 408 and the connection is closed;
* `SERVER__BODY_TIMEOUT`: a request's body must arrive within this many seconds of its headers,
  or the connection is closed (with a 408 when no answer has started).

It is passed to uvicorn as its `http` protocol class, the public way to choose one; it relies on
uvicorn's `HttpToolsProtocol` callbacks (`data_received`, `on_headers_complete`,
`on_message_complete`), which tests/server/test_http_protocol.py pins.
"""

from __future__ import annotations

import asyncio
import http

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# After a refusal, the client's remaining bytes are read and dropped for at most this long, or
# this many bytes, so that it can read the answer; then the connection is closed.
LINGER_SECONDS = 1.0
LINGER_BYTES = 4 * 1024 * 1024


def _plain_response(status: http.HTTPStatus, message: str) -> bytes:
    body = message.encode()
    return (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes: int = settings.SERVER_MAX_HEADER_BYTES
        self.header_timeout: float = settings.SERVER_HEADER_TIMEOUT
        self.body_timeout: float = settings.SERVER_BODY_TIMEOUT
        self._in_headers = True  # reading a request line and headers (or waiting for one)
        self._header_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._discard_budget: int | None = None  # set once refused: bytes still read and dropped

    # --- deadlines ----------------------------------------------------------------------------

    def _arm(self, seconds: float, on_expiry) -> None:
        self._disarm()
        if seconds > 0:
            self._deadline = self.loop.call_later(seconds, on_expiry)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        self._refuse(
            http.HTTPStatus.REQUEST_TIMEOUT,
            f"The request headers did not arrive within {self.header_timeout:g} s.",
        )

    def _body_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        message = f"The request body did not arrive within {self.body_timeout:g} s."
        self.logger.warning("Refused a request: %s", message)
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self.transport.write(_plain_response(http.HTTPStatus.REQUEST_TIMEOUT, message))
        if cycle is not None:
            # The app, waiting for the rest of the body, sees a disconnect; nothing it sends
            # afterwards is written.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _refuse(self, status: http.HTTPStatus, message: str) -> None:
        """
        Answer and close, lingering a moment: closing a socket with unread bytes makes the
        kernel reset it, and a client still sending its huge header would never read the answer.
        """
        if self.transport.is_closing() or self._discard_budget is not None:
            return
        self.logger.warning("Refused a request: %s", message)
        self.transport.write(_plain_response(status, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._discard_budget = LINGER_BYTES
        self._arm(LINGER_SECONDS, self.transport.close)

    # --- uvicorn's protocol hooks -------------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm(self.header_timeout, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discard_budget is not None:  # refused: read and drop, then close
            self._discard_budget -= len(data)
            if self._discard_budget < 0:
                self._disarm()
                self.transport.close()
            return
        if not self._in_headers:
            super().data_received(data)
            return
        if self._deadline is None:  # a new request on a kept-alive connection
            self._arm(self.header_timeout, self._headers_too_slow)
        allowed = self.max_header_bytes - self._header_bytes
        if len(data) <= allowed:
            self._header_bytes += len(data)
            super().data_received(data)
            return
        # Parse no more than the allowance; if that does not finish the headers, refuse.
        self._header_bytes += allowed
        super().data_received(data[:allowed])
        if self._in_headers:
            self._refuse(
                http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"The request headers are larger than {self.max_header_bytes} bytes.",
            )
        elif not self.transport.is_closing():
            super().data_received(data[allowed:])

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._arm(self.body_timeout, self._body_too_slow)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._in_headers = True
        self._header_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request's header deadline starts with its first byte; until then uvicorn's
        # keep-alive timeout applies.
        if self._in_headers:
            self._disarm()
