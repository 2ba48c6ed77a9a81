"""
X-API-Key authentication.

Clients send one of the keys listed in `API_KEY` (comma-separated, so keys can be rotated
without downtime) in the `X-API-Key` header. A missing header is a 401 with a hint; a wrong
key is a 403. Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from django.conf import settings
from rest_framework import authentication, exceptions

API_KEY_HEADER = "X-API-Key"
MISSING_KEY_DETAIL = "Missing API Key. Please provide X-API-Key header."
INVALID_KEY_DETAIL = "Invalid API Key"


@dataclass(frozen=True)
class ApiClient:
    """The caller, once its key is accepted. Only `is_authenticated` matters to DRF."""

    key_index: int
    is_authenticated: bool = True


def key_is_valid(candidate: str, keys: list[str]) -> int | None:
    """Return the index of the matching key, comparing every key in constant time."""
    match = None
    candidate_bytes = candidate.encode()
    for index, key in enumerate(keys):
        if hmac.compare_digest(candidate_bytes, key.encode()):
            match = index
    return match


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Accept a request whose `X-API-Key` header holds one of the configured keys."""

    def authenticate(self, request) -> tuple[ApiClient, None]:
        candidate = request.headers.get(API_KEY_HEADER)
        if not candidate:
            raise exceptions.NotAuthenticated(MISSING_KEY_DETAIL)
        index = key_is_valid(candidate, settings.API_KEYS)
        if index is None:
            raise exceptions.PermissionDenied(INVALID_KEY_DETAIL)
        return ApiClient(key_index=index), None

    def authenticate_header(self, request) -> str:
        return f'APIKey header="{API_KEY_HEADER}"'


class BearerOrApiKeyAuthentication(ApiKeyAuthentication):
    """
    The OpenAI-compatible endpoints also accept `Authorization: Bearer <key>`, which is what
    the OpenAI SDKs send. As on OpenAI's API, a wrong key is a 401 there.
    """

    def authenticate(self, request) -> tuple[ApiClient, None]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        candidate = token.strip() if scheme.lower() == "bearer" else ""
        candidate = candidate or request.headers.get(API_KEY_HEADER, "")
        if not candidate:
            raise exceptions.NotAuthenticated(
                "Missing API Key. Send Authorization: Bearer <key> or an X-API-Key header."
            )
        index = key_is_valid(candidate, settings.API_KEYS)
        if index is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY_DETAIL)
        return ApiClient(key_index=index), None

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="llmapi"'
