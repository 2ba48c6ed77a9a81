"""
What can go wrong translating a model server's chat answer into another API's shape.

    inference.exceptions.UpstreamError
    └── TranslationError .......... the server's answer cannot be translated faithfully
        ├── MalformedChunk ........ a chunk (or answer) that is not the chat completions API
        ├── InterleavedToolCall ... a server went back to a tool call it had left
        └── UpstreamStreamError ... the server reported an error in the stream itself

They are upstream errors (a 502 before the first byte; an in-band failure after it), so the
HTTP layer needs no new mapping. Every `detail` is safe to show a client.
"""

from __future__ import annotations

from inference.exceptions import UpstreamError


class TranslationError(UpstreamError):
    default_detail = "The model server's answer could not be translated."


class MalformedChunk(TranslationError):
    pass


class InterleavedToolCall(TranslationError):
    pass


class UpstreamStreamError(TranslationError):
    default_detail = "The model server reported an error mid-stream."
