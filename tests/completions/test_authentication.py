import pytest
from rest_framework import exceptions
from rest_framework.test import APIRequestFactory

from completions.authentication import (
    INVALID_KEY_DETAIL,
    MISSING_KEY_DETAIL,
    ApiKeyAuthentication,
    key_is_valid,
)

factory = APIRequestFactory()


@pytest.fixture(autouse=True)
def keys(settings):
    settings.API_KEYS = ["first-key", "second-key"]


def authenticate(**headers):
    request = factory.post("/", headers=headers)
    return ApiKeyAuthentication().authenticate(request)


def test_missing_key_raises_not_authenticated_with_hint():
    with pytest.raises(exceptions.NotAuthenticated) as caught:
        authenticate()
    assert caught.value.detail == MISSING_KEY_DETAIL


def test_wrong_key_raises_permission_denied():
    with pytest.raises(exceptions.PermissionDenied) as caught:
        authenticate(**{"X-API-Key": "nope"})
    assert caught.value.detail == INVALID_KEY_DETAIL


@pytest.mark.parametrize(("key", "index"), [("first-key", 0), ("second-key", 1)])
def test_every_rotated_key_is_accepted(key, index):
    client, _ = authenticate(**{"X-API-Key": key})
    assert client.is_authenticated and client.key_index == index


def test_prefix_of_a_key_is_not_accepted():
    assert key_is_valid("first", ["first-key"]) is None


def test_no_configured_keys_accepts_nothing():
    assert key_is_valid("", []) is None


def test_authenticate_header_names_the_header():
    assert "X-API-Key" in ApiKeyAuthentication().authenticate_header(None)
