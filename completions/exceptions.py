"""
The gateway's exceptions and the one DRF exception handler that renders them.

    LlmApiError (rest_framework APIException)
    ├── ModelNotConfigured ........ 503  the model has no server configured
    ├── ModelBusy ................. 429  no concurrency slot within QUEUE_TIMEOUT (Retry-After)
    ├── ModelNotFound ............. 404  /v1 asked for a model name that is not configured
    ├── InvalidImage .............. 400  the upload is not an image
    ├── ContextLengthExceeded ..... 400  the prompt does not fit the model's context window
                                         (code `context_length_exceeded`, as OpenAI's)
    ├── UnsupportedImage .......... 415  an image, but not JPEG, PNG, WebP or GIF
    ├── PayloadTooLarge ........... 413
    └── UpstreamError ............. 502  anything that went wrong talking to the model server
        ├── UpstreamUnavailable ... 502  connection refused, reset, DNS failure
        ├── UpstreamTimeout ....... 504  connect or read timeout
        ├── UpstreamProtocolError . 502  the server answered something that is not the OpenAI API
        ├── InvalidModelOutput .... 502  the answer broke the requested JSON format, even after repair
        ├── OutputCheckTooCostly .. 502  the answer could not be checked within the validation budget
        └── UpstreamStatusError ... the server answered an error status:
                                    4xx passes through, 5xx becomes 502, 429 keeps Retry-After

Every error reaches the client as `{"detail": "..."}`. Unexpected exceptions become a 500 with
a generic detail; the traceback goes to the log, never to the client. Error bodies and log lines
quote at most a few hundred characters of anything a client (or a model) sent: see `quote`.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)

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


class LlmApiError(drf_exceptions.APIException):
    status_code: int = HTTPStatus.INTERNAL_SERVER_ERROR
    default_detail = "The gateway could not complete the request."
    retry_after: int | None = None


class ModelNotConfigured(LlmApiError):
    status_code = HTTPStatus.SERVICE_UNAVAILABLE


class ModelBusy(LlmApiError):
    status_code = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class InvalidImage(LlmApiError):
    status_code = HTTPStatus.BAD_REQUEST


class ContextLengthExceeded(LlmApiError):
    """The messages are longer than the model's context window; raised before generating."""

    status_code = HTTPStatus.BAD_REQUEST
    code = "context_length_exceeded"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.extra = {"code": self.code}


class UnsupportedImage(LlmApiError):
    status_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class PayloadTooLarge(LlmApiError):
    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UpstreamError(LlmApiError):
    status_code: int = HTTPStatus.BAD_GATEWAY
    default_detail = "The model server failed."
    # Set by the upstream module: may the request go to another replica, and does this
    # failure count against the replica's health?
    retryable: bool = False
    replica_failure: bool = False


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    status_code = HTTPStatus.GATEWAY_TIMEOUT


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
        # A 4xx is passed on (429 included), except 401/403: those refuse the gateway's own
        # credentials, which the client cannot fix. Server failures become 502.
        refused_credentials = upstream_status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN)
        if 400 <= upstream_status < 500 and not refused_credentials:
            self.status_code = upstream_status
        else:
            self.status_code = HTTPStatus.BAD_GATEWAY


def exception_handler(exc: Exception, context: dict) -> Response:
    """Render every exception as `{"detail": ...}` and log it once."""
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.error("Unhandled error", exc_info=exc)
        return Response(
            {"detail": "Internal server error."}, status=HTTPStatus.INTERNAL_SERVER_ERROR
        )
    if isinstance(response.data, dict) and "detail" not in response.data:
        # Field validation errors: keep the per-field messages and add one readable summary.
        errors = _quoted(response.data)
        response.data = {"detail": _summarize_validation(errors), "errors": errors}
    elif isinstance(response.data, list):
        response.data = {"detail": " ".join(str(item) for item in response.data)}
    # DRF's messages may repeat what the client sent (`"<value>" is not a valid choice.`).
    response.data["detail"] = quote(response.data.get("detail", ""), DETAIL_LIMIT)
    extra = getattr(exc, "extra", None)
    if extra:
        response.data.update(extra)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    level = logging.WARNING if response.status_code >= 500 else logging.INFO
    logger.log(level, "%s %s", response.status_code, response.data.get("detail"))
    return response


OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ModelNotFound(LlmApiError):
    status_code = HTTPStatus.NOT_FOUND


def openai_exception_handler(exc: Exception, context: dict) -> Response:
    """The same errors, in OpenAI's shape, so the OpenAI SDKs raise the right exception class."""
    response = exception_handler(exc, context)
    data = response.data
    errors = data.get("errors") if isinstance(data, dict) else None
    param = next(iter(errors), None) if isinstance(errors, dict) else None
    if isinstance(exc, ModelNotFound):
        param, code = "model", "model_not_found"
    elif isinstance(exc, ContextLengthExceeded):
        param, code = "messages", exc.code
    elif response.status_code == HTTPStatus.UNAUTHORIZED:
        code = "invalid_api_key"
    elif response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
        code = "rate_limit_exceeded"
    else:
        code = None
    response.data = {
        "error": {
            "message": data.get("detail", ""),
            "type": OPENAI_ERROR_TYPES.get(response.status_code, "api_error"),
            "param": param,
            "code": code,
        }
    }
    return response


def _quoted(errors):
    """The field errors with every message shortened by `quote`."""
    if isinstance(errors, dict):
        return {field: _quoted(messages) for field, messages in errors.items()}
    if isinstance(errors, list):
        return [_quoted(item) for item in errors]
    if isinstance(errors, str):
        # Keep DRF's ErrorDetail (with its code) when nothing needs cutting.
        return errors if len(errors) <= QUOTE_LIMIT else quote(errors)
    return errors


def _summarize_validation(errors: dict, prefix: str = "") -> str:
    parts = []
    for field, messages in errors.items():
        name = f"{prefix}{field}" if field != "non_field_errors" else prefix.rstrip(".") or "body"
        if isinstance(messages, dict):
            parts.append(_summarize_validation(messages, prefix=f"{name}."))
        elif isinstance(messages, list) and messages and isinstance(messages[0], dict | list):
            for index, item in enumerate(messages):
                if item:
                    nested = item if isinstance(item, dict) else {"": item}
                    parts.append(_summarize_validation(nested, prefix=f"{name}[{index}]."))
        else:
            text = " ".join(str(m) for m in messages) if isinstance(messages, list) else messages
            parts.append(f"{name}: {text}")
    return " ".join(parts)
