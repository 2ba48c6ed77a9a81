"""
X-API-Key authentication, and the browser session that carries a key for the browsable API.

Clients send one of the keys listed in `API_KEY` (comma-separated, so keys can be rotated
without downtime) in the `X-API-Key` header. A missing header is a 401 with a hint; a wrong
key is a 403. Keys are compared in constant time and never logged.

A person using the browsable API from a plain browser cannot set a header, so /api-auth/key
takes the key once and keeps a fingerprint of it in a Django session (a signed cookie: there
is no database). Requests without the header then authenticate with that session, with
Django's CSRF check on unsafe methods exactly as DRF's SessionAuthentication does. A request
that sends the header is judged by the header alone, and never needs a CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from django.conf import settings
from django.middleware.csrf import rotate_token
from rest_framework import authentication, exceptions

API_KEY_HEADER = "X-API-Key"
MISSING_KEY_DETAIL = "Missing API Key. Please provide X-API-Key header."
INVALID_KEY_DETAIL = "Invalid API Key"
# The session holds a digest of the key, never the key: a signed cookie is readable by its
# holder, and the digest still stops working as soon as the key is removed from API_KEY.
SESSION_KEY_DIGEST = "llmapi_api_key_sha256"


@dataclass(frozen=True)
class ApiClient:
    """The caller, once its key is accepted. Only `is_authenticated` matters to DRF."""

    key_index: int
    is_authenticated: bool = True

    def __str__(self) -> str:
        # Shown in the browsable API's navbar; the key itself is never shown.
        return f"API key #{self.key_index + 1}"


def key_is_valid(candidate: str, keys: list[str]) -> int | None:
    """Return the index of the matching key, comparing every key in constant time."""
    match = None
    candidate_bytes = candidate.encode()
    for index, key in enumerate(keys):
        if hmac.compare_digest(candidate_bytes, key.encode()):
            match = index
    return match


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def log_in_session(request, key: str) -> ApiClient | None:
    """
    Check `key` exactly as the header is checked and, when it is valid, keep its digest in
    the request's session (under a new session id and CSRF token, as Django's own login
    does, so neither can be planted beforehand).
    """
    index = key_is_valid(key, settings.API_KEYS)
    if index is None:
        return None
    request.session.cycle_key()
    rotate_token(request)
    request.session[SESSION_KEY_DIGEST] = key_digest(key)
    return ApiClient(key_index=index)


def log_out_session(request) -> None:
    request.session.flush()


def session_client(request) -> ApiClient | None:
    """The client whose key the browser session carries, if it is still a configured key."""
    # Only a browser that logged in sends the cookie; anything else never touches the session
    # (so header-less API calls are not marked `Vary: Cookie`).
    session = getattr(request, "session", None)
    if session is None or settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return None
    digest = session.get(SESSION_KEY_DIGEST)
    if not isinstance(digest, str):
        return None
    return client_for_digest(digest)


def client_for_digest(digest: str) -> ApiClient | None:
    match = None
    for index, key in enumerate(settings.API_KEYS):
        if hmac.compare_digest(digest.encode(), key_digest(key).encode()):
            match = index
    return None if match is None else ApiClient(key_index=match)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """
    Accept a request whose `X-API-Key` header holds one of the configured keys, or, without
    the header, a browser session opened at /api-auth/key (CSRF-checked like DRF's
    SessionAuthentication).
    """

    def authenticate(self, request) -> tuple[ApiClient, None]:
        candidate = request.headers.get(API_KEY_HEADER)
        if not candidate:
            client = session_client(request)
            if client is None:
                raise exceptions.NotAuthenticated(MISSING_KEY_DETAIL)
            # DRF's own check: Django's CSRF validation of unsafe methods, raising 403.
            authentication.SessionAuthentication().enforce_csrf(request)
            return client, None
        index = key_is_valid(candidate, settings.API_KEYS)
        if index is None:
            raise exceptions.PermissionDenied(INVALID_KEY_DETAIL)
        return ApiClient(key_index=index), None

    def authenticate_header(self, request) -> str:
        return f'APIKey header="{API_KEY_HEADER}"'


class BearerOrApiKeyAuthentication(ApiKeyAuthentication):
    """
    The OpenAI-compatible endpoints also accept `Authorization: Bearer <key>`, which is what
    the OpenAI SDKs send. As on OpenAI's API, a wrong key is a 401 there. They are for
    programs, so they take no browser session.
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
