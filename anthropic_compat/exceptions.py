"""
Errors in Anthropic's shape, for `/v1/messages`:

    {"type": "error", "error": {"type": "invalid_request_error", "message": "..."}}

The gateway's errors keep their statuses (`api.exceptions.exception_handler` decides them);
only the body changes, with the `error.type` Anthropic's SDKs and Claude Code read, and
`retry-after` where they wait before retrying (429, 503). The tree of errors is the gateway's
own (`inference.exceptions`, `limits`); this module adds none.
"""

from __future__ import annotations

from http import HTTPStatus

from rest_framework.response import Response

from api.exceptions import exception_handler
from inference import exceptions as inference

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def anthropic_exception_handler(exc: Exception, context: dict) -> Response:
    """The gateway's errors, statuses and headers, with Anthropic's body."""
    response = exception_handler(exc, context)
    data = response.data if isinstance(response.data, dict) else {}
    message = str(data.get("detail", ""))
    errors = data.get("errors")
    if isinstance(errors, dict) and errors and not message:
        message = "; ".join(f"{field}: {value}" for field, value in errors.items())
    response.data = error_body(response.status_code, message)
    if response.status_code == HTTPStatus.SERVICE_UNAVAILABLE and "Retry-After" not in response:
        response["Retry-After"] = "1"
    if isinstance(exc, inference.UpstreamError):
        # The gateway retried the model server already (MAX_RETRIES); the SDKs' own retries
        # would multiply those calls.
        response["x-should-retry"] = "false"
    return response
