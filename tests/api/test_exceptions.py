from http import HTTPStatus

import pytest
from rest_framework import serializers

from api.exceptions import exception_handler, openai_exception_handler, status_of
from inference.exceptions import (
    ContextLengthExceeded,
    ModelBusy,
    UpstreamStatusError,
    UpstreamTimeout,
)
from limits.quotas import InProcessQuotaStore, Limits, QuotaExceeded, QuotaSubject


@pytest.mark.parametrize(
    ("upstream_status", "client_status"),
    [
        (400, HTTPStatus.BAD_REQUEST),
        (404, HTTPStatus.NOT_FOUND),
        (422, HTTPStatus.UNPROCESSABLE_ENTITY),
        (429, HTTPStatus.TOO_MANY_REQUESTS),
        (401, HTTPStatus.BAD_GATEWAY),
        (403, HTTPStatus.BAD_GATEWAY),
        (500, HTTPStatus.BAD_GATEWAY),
        (503, HTTPStatus.BAD_GATEWAY),
    ],
)
def test_upstream_status_maps_to_client_status(upstream_status, client_status):
    assert status_of(UpstreamStatusError("x", upstream_status=upstream_status)) == client_status


def test_handler_renders_detail_and_retry_after():
    response = exception_handler(ModelBusy("busy", retry_after=7), {})
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert response.data == {"detail": "busy"}
    assert response["Retry-After"] == "7"


def test_context_length_exceeded_is_a_400_with_openais_code():
    response = exception_handler(ContextLengthExceeded("too long"), {})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.data == {"detail": "too long", "code": "context_length_exceeded"}


def test_context_length_exceeded_in_openais_shape():
    response = openai_exception_handler(ContextLengthExceeded("too long"), {})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.data == {
        "error": {
            "message": "too long",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }


def test_handler_maps_timeout_to_504():
    response = exception_handler(UpstreamTimeout("slow"), {})
    assert response.status_code == HTTPStatus.GATEWAY_TIMEOUT


def test_validation_errors_get_a_readable_detail_naming_the_field():
    error = serializers.ValidationError(
        {"temperature": ["Too hot."], "messages": [{}, {"role": ["Bad role."]}]}
    )
    response = exception_handler(error, {})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "temperature: Too hot." in response.data["detail"]
    assert "messages[1].role: Bad role." in response.data["detail"]
    assert response.data["errors"]["temperature"] == ["Too hot."]


def test_unexpected_exception_is_a_500_without_internals():
    response = exception_handler(RuntimeError("secret internals"), {})
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert "secret" not in str(response.data)


@pytest.mark.parametrize("handler", [exception_handler, openai_exception_handler])
async def test_a_quota_refusal_names_whose_limit_and_which(handler):
    store = InProcessQuotaStore()
    subject = QuotaSubject(key_id="1", team_id="7", team_limits=Limits(tokens_per_day=30))
    await store.reserve(subject, tokens=30)
    with pytest.raises(QuotaExceeded) as refused:
        await store.reserve(subject, tokens=1)

    response = handler(refused.value, {})

    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    detail = response.data.get("detail") or response.data["error"]["message"]
    assert detail == "Rate limit reached: the team's limit of 30 tokens per day."
    assert int(response["Retry-After"]) >= 1
