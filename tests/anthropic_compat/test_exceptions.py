"""The gateway's errors in Anthropic's shape, with their statuses and retry headers."""

from http import HTTPStatus

import pytest
from rest_framework.exceptions import NotAuthenticated, ValidationError

from anthropic_compat.exceptions import anthropic_exception_handler
from inference.exceptions import (
    ModelBusy,
    ModelNotConfigured,
    ModelNotFound,
    UpstreamError,
    UpstreamTimeout,
)
from limits.quotas import QuotaExceeded


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (
            ValidationError({"max_tokens": ["This field is required."]}),
            400,
            "invalid_request_error",
        ),
        (NotAuthenticated("Missing API Key."), 401, "authentication_error"),
        (ModelNotFound("No model 'x'."), 404, "not_found_error"),
        (ModelBusy("Busy.", retry_after=3), 429, "rate_limit_error"),
        (ModelNotConfigured("Set TEXT_MODEL__BASE_URL."), 503, "overloaded_error"),
        (UpstreamError("The server failed."), 502, "api_error"),
        (UpstreamTimeout("Too slow."), 504, "timeout_error"),
    ],
)
def test_errors_have_anthropics_shape_and_the_gateways_status(exc, status, kind):
    response = anthropic_exception_handler(exc, {})
    assert response.status_code == status
    assert response.data["type"] == "error"
    assert response.data["error"]["type"] == kind
    assert response.data["error"]["message"]


def test_validation_error_names_the_field():
    response = anthropic_exception_handler(ValidationError({"max_tokens": ["Required."]}), {})
    assert "max_tokens" in response.data["error"]["message"]


def test_retry_after_where_clients_wait():
    busy = anthropic_exception_handler(ModelBusy("Busy.", retry_after=3), {})
    assert busy["Retry-After"] == "3"
    quota = QuotaExceeded("Over quota.", retry_after=42, headers={"x-ratelimit-limit-tokens": "10"})
    refused = anthropic_exception_handler(quota, {})
    assert (refused.status_code, refused["Retry-After"]) == (HTTPStatus.TOO_MANY_REQUESTS, "42")
    assert refused["x-ratelimit-limit-tokens"] == "10"
    assert refused.data["error"]["type"] == "rate_limit_error"
    overloaded = anthropic_exception_handler(ModelNotConfigured("Not configured."), {})
    assert overloaded["Retry-After"] == "1"


def test_upstream_failures_tell_the_sdks_not_to_retry_again():
    response = anthropic_exception_handler(UpstreamError("The server failed."), {})
    assert response["x-should-retry"] == "false"
