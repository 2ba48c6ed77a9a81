"""
What can go wrong in the inference core. Plain Python exceptions: the HTTP layer
(`api/exceptions.py`) maps each to a status, so nothing here knows about DRF.

    InferenceError
    ├── ModelNotConfigured ........ no server (or embedded model) serves the model
    ├── ModelNotFound ............. no model of that name or alias
    ├── ModelBusy ................. no concurrency slot within QUEUE_TIMEOUT (retry_after)
    ├── CapabilityMissing ......... the model cannot do what was asked (images, tools, ...)
    ├── InvalidParameter .......... a request field of the wrong type or range (`param`)
    ├── InvalidImage .............. the upload is not an image
    ├── UnsupportedImage .......... an image, but not JPEG, PNG, WebP or GIF
    ├── PayloadTooLarge ........... an image or field over its limit
    ├── ContextLengthExceeded ..... the prompt does not fit the context window
    └── UpstreamError ............. anything that went wrong talking to the model server
        ├── UpstreamUnavailable ... connection refused, reset, DNS failure
        ├── UpstreamTimeout ....... connect or read timeout
        ├── UpstreamProtocolError . the server answered something that is not the OpenAI API
        ├── InvalidModelOutput .... the answer broke the requested JSON format, even after repair
        ├── OutputCheckTooCostly .. the answer could not be checked within the validation budget
        └── UpstreamStatusError ... the server answered an error status (`upstream_status`)

Every `detail` is safe to show a client. Messages quote at most a few hundred characters of
anything a client (or a model) sent: see `quote`.
"""

from __future__ import annotations

from typing import Any

# How much of a client's (or a model's) text an error body or a log line may quote.
QUOTE_LIMIT = 300
DETAIL_LIMIT = 1000
OUTPUT_LIMIT = 2000


def quote(text: object, limit: int = QUOTE_LIMIT) -> str:
    """`text` as a string of at most about `limit` characters, saying how long it really was."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text)} characters]"


class InferenceError(Exception):
    default_detail = "The gateway could not complete the request."
    retry_after: int | None = None
    # Fields added to the error body beside `detail` (evidence, an OpenAI error code).
    extra: dict[str, Any] | None = None

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class ModelNotConfigured(InferenceError):
    pass


class ModelNotFound(InferenceError):
    pass


class InvalidParameter(InferenceError):
    """A field the gateway reads (a token count, say) is of the wrong type or out of range."""

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(detail)
        self.param = param
        self.extra = {"errors": {param: [detail]}}


class ModelBusy(InferenceError):
    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class CapabilityMissing(InferenceError):
    pass


class InvalidImage(InferenceError):
    pass


class UnsupportedImage(InferenceError):
    pass


class PayloadTooLarge(InferenceError):
    pass


class ContextLengthExceeded(InferenceError):
    """The messages are longer than the model's context window; raised before generating."""

    code = "context_length_exceeded"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.extra = {"code": self.code}


class UpstreamError(InferenceError):
    default_detail = "The model server failed."
    # Set by the backend: may the request go to another replica (or a fallback model), and
    # does this failure count against the replica's health?
    retryable: bool = False
    replica_failure: bool = False


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamProtocolError(UpstreamError):
    pass


class InvalidModelOutput(UpstreamError):
    """The model's answer is not the JSON that was asked for; `extra` carries the evidence."""

    def __init__(self, detail: str, *, errors: list[dict[str, str]], output: str) -> None:
        super().__init__(quote(detail, DETAIL_LIMIT))
        errors = [{key: quote(value) for key, value in error.items()} for error in errors]
        self.extra = {"errors": errors, "output": quote(output, OUTPUT_LIMIT)}


class OutputCheckTooCostly(UpstreamError):
    """Checking the answer against the schema ran past its time budget or recursion limit."""


class UpstreamStatusError(UpstreamError):
    """The model server answered with an error status; `upstream_status` keeps it."""

    def __init__(self, detail: str, *, upstream_status: int, retry_after: int | None = None):
        super().__init__(detail)
        self.upstream_status = upstream_status
        self.retry_after = retry_after
