"""
The one place errors become HTTP responses.

`exception_handler` (DRF's `EXCEPTION_HANDLER`) renders DRF's own exceptions and the inference
core's `InferenceError` tree as `{"detail": "..."}` with the status below, and logs each once.
`openai_exception_handler` gives the same errors OpenAI's shape for `/v1`. Unexpected
exceptions become a 500 with a generic detail; the traceback goes to the log, never to the
client. Bodies and log lines quote at most a few hundred characters of what a client sent.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from gateway.statuses import status_of
from inference import exceptions as inference
from limits.exceptions import LimitsUnavailable
from limits.quotas import QuotaExceeded
from observability.middleware import record_quota_refusal

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict) -> Response:
    """Render every exception as `{"detail": ...}` and log it once."""
    response: Response | None
    if isinstance(exc, QuotaExceeded):
        record_quota_refusal(exc)  # model-slot 429s are counted where they happen
    if isinstance(exc, inference.InferenceError):
        response = Response({"detail": exc.detail}, status=status_of(exc))
    elif isinstance(exc, QuotaExceeded):
        # Its headers (Retry-After, x-ratelimit-*) are added below.
        response = Response({"detail": exc.detail}, status=HTTPStatus.TOO_MANY_REQUESTS)
    elif isinstance(exc, LimitsUnavailable):
        # Redis is down and LIMITS__ON_REDIS_ERROR=closed: refuse rather than admit uncounted.
        response = Response({"detail": str(exc)}, status=HTTPStatus.SERVICE_UNAVAILABLE)
        response["Retry-After"] = "1"
    else:
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
    response.data["detail"] = inference.quote(
        response.data.get("detail", ""), inference.DETAIL_LIMIT
    )
    extra = getattr(exc, "extra", None)
    if extra:
        response.data.update(extra)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    for header, value in (getattr(exc, "headers", None) or {}).items():
        response[header] = value
    level = logging.WARNING if response.status_code >= 500 else logging.INFO
    logger.log(level, "%s %s", response.status_code, response.data.get("detail"))
    return response


OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error_body(status: int, message: str, *, param=None, code=None) -> dict:
    return {
        "error": {
            "message": message,
            "type": OPENAI_ERROR_TYPES.get(status, "api_error"),
            "param": param,
            "code": code,
        }
    }


def openai_exception_handler(exc: Exception, context: dict) -> Response:
    """The same errors, in OpenAI's shape, so the OpenAI SDKs raise the right exception class."""
    response = exception_handler(exc, context)
    data = response.data
    errors = data.get("errors") if isinstance(data, dict) else None
    param = next(iter(errors), None) if isinstance(errors, dict) else None
    if isinstance(exc, inference.ModelNotFound):
        param, code = "model", "model_not_found"
    elif isinstance(exc, inference.ContextLengthExceeded):
        param, code = "messages", exc.code
    elif response.status_code == HTTPStatus.UNAUTHORIZED:
        code = "invalid_api_key"
    elif response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
        code = "rate_limit_exceeded"
    else:
        code = None
    response.data = openai_error_body(
        response.status_code, data.get("detail", ""), param=param, code=code
    )
    if isinstance(exc, inference.UpstreamError):
        # The gateway already retried the model server (MAX_RETRIES) and repaired the answer
        # (JSON_RETRIES); the OpenAI SDKs' own retries would multiply those calls.
        response["x-should-retry"] = "false"
    return response


# Field errors listed in a 400 at the most: a body with thousands of unknown keys gets the
# first few, not an echo of itself.
MAX_FIELD_ERRORS = 20


def _quoted(errors, budget: list[int] | None = None):
    """The field errors, every message shortened by `quote`, at most MAX_FIELD_ERRORS of them."""
    budget = [MAX_FIELD_ERRORS] if budget is None else budget
    if isinstance(errors, dict):
        kept = {}
        for field, messages in errors.items():
            if budget[0] <= 0:
                kept["…"] = "more errors left out"
                break
            kept[inference.quote(field, 60)] = _quoted(messages, budget)
        return kept
    if isinstance(errors, list):
        return [_quoted(item, budget) for item in errors if budget[0] > 0]
    if isinstance(errors, str):
        budget[0] -= 1
        # Keep DRF's ErrorDetail (with its code) when nothing needs cutting.
        return errors if len(errors) <= inference.QUOTE_LIMIT else inference.quote(errors)
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
