"""
The HTTP status of each failure of a model call: what the exception handler answers and what
the ledger records. Plain data, so both the DRF layer (`api.exceptions`) and the accounted path
(`gateway.calls`) read it from here.
"""

from __future__ import annotations

from http import HTTPStatus

from inference import exceptions as inference
from limits.exceptions import LimitsUnavailable
from limits.quotas import QuotaExceeded

# The status of each inference error, most specific first (the first class in an error's MRO
# found here wins).
STATUS_OF: dict[type[inference.InferenceError], int] = {
    inference.ModelNotConfigured: HTTPStatus.SERVICE_UNAVAILABLE,
    inference.ModelNotFound: HTTPStatus.NOT_FOUND,
    inference.ModelBusy: HTTPStatus.TOO_MANY_REQUESTS,
    inference.CapabilityMissing: HTTPStatus.BAD_REQUEST,
    inference.InvalidParameter: HTTPStatus.BAD_REQUEST,
    inference.InvalidImage: HTTPStatus.BAD_REQUEST,
    inference.UnsupportedImage: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    inference.PayloadTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    inference.ContextLengthExceeded: HTTPStatus.BAD_REQUEST,
    inference.UpstreamTimeout: HTTPStatus.GATEWAY_TIMEOUT,
    inference.UpstreamError: HTTPStatus.BAD_GATEWAY,
    inference.InferenceError: HTTPStatus.INTERNAL_SERVER_ERROR,
}


def status_of(exc: inference.InferenceError) -> int:
    if isinstance(exc, inference.UpstreamStatusError):
        # A 4xx is passed on (429 included), except 401/403: those refuse the gateway's own
        # credentials, which the client cannot fix. Server failures become 502.
        upstream = exc.upstream_status
        if 400 <= upstream < 500 and upstream not in (
            HTTPStatus.UNAUTHORIZED,
            HTTPStatus.FORBIDDEN,
        ):
            return upstream
        return HTTPStatus.BAD_GATEWAY
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return HTTPStatus.INTERNAL_SERVER_ERROR


def status_of_failure(exc: BaseException) -> int:
    """The status a failed call is answered (and recorded) with; 499 when the client left."""
    if not isinstance(exc, Exception):
        return 499
    if isinstance(exc, inference.InferenceError):
        return status_of(exc)
    if isinstance(exc, QuotaExceeded):
        return HTTPStatus.TOO_MANY_REQUESTS
    if isinstance(exc, LimitsUnavailable):
        return HTTPStatus.SERVICE_UNAVAILABLE
    return int(getattr(exc, "status_code", HTTPStatus.INTERNAL_SERVER_ERROR))
