"""
DRF authentication: API keys from the database, the operator's `API_KEY` from the
environment, and staff sessions for the browsable API.

`ApiKeyAuthentication` reads `X-API-Key`. A missing header is a 401 with a hint, a wrong,
revoked or expired key a 403 (the seed API's exact messages). Keys from the environment
(`API_KEY`, comma-separated) are compared in constant time and have no quotas; they are the
operator's bootstrap keys. Keys from the database (`llm_<prefix>_<secret>`) are checked
against their stored hash through the in-process cache of `accounts.selectors`.

DRF calls `authenticate()` synchronously. On the event loop the database cannot be used, so
an async view first awaits `prepare_authentication(request)`, which fills the cache when the
key is not in it (one thread hop per key per cache period); `authenticate()` then answers
from the cache without blocking. In a sync view (a worker thread) it looks keys up directly.

A person using the browsable API from a plain browser cannot set a header, so /api-auth/key
takes a key once and keeps a digest of it (and, for a database key, its prefix) in the
server-side session (`accounts.key_sessions`). A request without the header then
authenticates with that session, with Django's CSRF check on unsafe methods exactly as DRF's
SessionAuthentication does; the session stops working when its key is removed from
`API_KEY`, revoked or expired. A request that sends the header is judged by the header
alone, and never needs a CSRF token. The OpenAI-compatible endpoints take no session.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from django.conf import settings
from django.db import DatabaseError
from rest_framework import authentication, exceptions

from accounts import selectors
from accounts.keys import KEY_PREFIX
from accounts.principals import Principal, bootstrap_principal, staff_principal
from accounts.session_keys import (
    SESSION_KEY_DIGEST,
    SESSION_KEY_PREFIX,
    environment_key_for_digest,
)

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
MISSING_KEY_DETAIL = "Missing API Key. Please provide X-API-Key header."
INVALID_KEY_DETAIL = "Invalid API Key"
BEARER_MISSING_KEY_DETAIL = (
    "Missing API Key. Send Authorization: Bearer <key> or an X-API-Key header."
)


def check_model_allowed(principal, *model_names: str) -> None:
    """
    Refuse (403) a key that may not use this model. Pass the catalog name and its aliases:
    the key may list any of them.
    """
    may_use = getattr(principal, "may_use", None)
    if may_use is not None and not may_use(*model_names):
        raise exceptions.PermissionDenied(
            f"This API key may not use the model {model_names[0]!r}."
            if model_names
            else "This API key may not use this model."
        )


class KeyStoreUnavailable(exceptions.APIException):
    """The database could not be asked about a key that is not cached: 503, not a 500."""

    status_code = 503
    default_detail = "API keys cannot be checked right now; try again shortly."
    default_code = "key_store_unavailable"


class KeyCacheNotPrepared(RuntimeError):
    """authenticate() ran on the event loop for a key that prepare_authentication() skipped."""


def environment_key_index(candidate: str) -> int | None:
    """Index of the matching `API_KEY` entry, comparing every entry in constant time."""
    match = None
    candidate_bytes = candidate.encode()
    for index, key in enumerate(settings.API_KEYS):
        if hmac.compare_digest(candidate_bytes, key.encode()):
            match = index
    return match


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def resolve_key(candidate: str) -> Principal | None:
    """The caller this key belongs to, or None. Never blocks on the event loop."""
    index = environment_key_index(candidate)
    if index is not None:
        return bootstrap_principal(index)
    if not is_database_key(candidate):
        return None
    return _cached_or_loaded(candidate, lambda: selectors.load_principal(candidate))


def _cached_or_loaded(cache_key: str, load) -> Principal | None:
    """
    The principal cached under `cache_key`, or `load()` from the database: only off the event
    loop (prepare_authentication does it there), with database failures as a 503.
    """
    cached = selectors.cached_principal(cache_key)
    if cached is not selectors.NOT_CACHED:
        return cached
    if _on_event_loop():
        raise KeyCacheNotPrepared(
            "await accounts.authentication.prepare_authentication(request) before DRF's "
            "authentication runs on the event loop"
        )
    try:
        return load()
    except DatabaseError as exc:
        logger.error("Key lookup failed: %s", exc)
        raise KeyStoreUnavailable() from None


def is_database_key(candidate: str) -> bool:
    # "#" marks the cache entries of browser sessions (selectors.session_candidate): a
    # presented key never reaches them.
    return candidate.startswith(KEY_PREFIX) and "#" not in candidate


def session_digest_and_prefix(request) -> tuple[str, str] | None:
    """The key digest (and database key prefix, or "") a browser session carries, if any."""
    # Only a browser that logged in sends the cookie; anything else never touches the session
    # (so header-less API calls are not marked `Vary: Cookie`).
    django_request = getattr(request, "_request", request)
    session = getattr(django_request, "session", None)
    if session is None or settings.SESSION_COOKIE_NAME not in django_request.COOKIES:
        return None
    digest = session.get(SESSION_KEY_DIGEST)
    if not isinstance(digest, str):
        return None
    prefix = session.get(SESSION_KEY_PREFIX, "")
    return digest, prefix if isinstance(prefix, str) else ""


def session_principal(request) -> Principal | None:
    """The caller whose key the browser session carries, while that key is still valid."""
    carried = session_digest_and_prefix(request)
    if carried is None:
        return None
    digest, prefix = carried
    if not prefix:
        index = environment_key_for_digest(digest)
        return None if index is None else bootstrap_principal(index)
    prepared = getattr(request, PREPARED_ATTRIBUTE, None)
    if prepared is not None and prepared[0] == selectors.session_candidate(prefix):
        return prepared[1]
    return _cached_or_loaded(
        selectors.session_candidate(prefix), lambda: selectors.load_session_principal(prefix)
    )


def presented_key(request) -> str:
    """The key a request carries: X-API-Key, or an `Authorization: Bearer` token."""
    candidate = request.headers.get(API_KEY_HEADER)
    if candidate:
        return candidate
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


# Where prepare_authentication() leaves its answer for authenticate(), on the request.
PREPARED_ATTRIBUTE = "_llmapi_principal"


async def prepare_authentication(request) -> None:
    """
    Look the request's key up (from the cache, or the database in a thread) and keep the
    answer on the request, where authenticate() finds it (see the module docstring).
    """
    candidate = presented_key(request)
    if not candidate:
        carried = session_digest_and_prefix(request)
        if carried is None or not carried[1]:
            return  # no key, or an environment key's session: nothing to look up
        prefix = carried[1]
        try:
            principal = await selectors.alookup_session_principal(prefix)
        except DatabaseError as exc:
            logger.error("Key lookup failed: %s", exc)
            raise KeyStoreUnavailable() from None
        setattr(request, PREPARED_ATTRIBUTE, (selectors.session_candidate(prefix), principal))
        return
    index = environment_key_index(candidate)
    if index is not None:
        principal = bootstrap_principal(index)
    elif is_database_key(candidate):
        cached = selectors.cached_principal(candidate)
        if cached is selectors.NOT_CACHED:
            try:
                principal = await selectors.alookup_principal(candidate)
            except DatabaseError as exc:
                logger.error("Key lookup failed: %s", exc)
                raise KeyStoreUnavailable() from None
        else:
            principal = cached
    else:
        principal = None
    setattr(request, PREPARED_ATTRIBUTE, (candidate, principal))


def _authenticate(request, candidate: str) -> Principal | None:
    prepared = getattr(request, PREPARED_ATTRIBUTE, None)
    if prepared is not None and prepared[0] == candidate and "#" not in candidate:
        return prepared[1]
    return resolve_key(candidate)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """
    Accept a request whose `X-API-Key` header holds a valid key or, without the header, a
    browser session opened at /api-auth/key (CSRF-checked); see the module docstring.
    """

    def authenticate(self, request) -> tuple[Principal, None]:
        candidate = request.headers.get(API_KEY_HEADER)
        if not candidate:
            principal = session_principal(request)
            if principal is None:
                raise exceptions.NotAuthenticated(MISSING_KEY_DETAIL)
            # DRF's own check: Django's CSRF validation of unsafe methods, raising 403.
            authentication.SessionAuthentication().enforce_csrf(request)
            return principal, None
        principal = _authenticate(request, candidate)
        if principal is None:
            raise exceptions.PermissionDenied(INVALID_KEY_DETAIL)
        return principal, None

    def authenticate_header(self, request) -> str:
        return f'APIKey header="{API_KEY_HEADER}"'


class BearerOrApiKeyAuthentication(ApiKeyAuthentication):
    """
    For /v1: also `Authorization: Bearer <key>`, which the OpenAI SDKs send. As on OpenAI's
    API, a wrong key is a 401 there.
    """

    def authenticate(self, request) -> tuple[Principal, None]:
        candidate = presented_key(request)
        if not candidate:
            raise exceptions.NotAuthenticated(BEARER_MISSING_KEY_DETAIL)
        principal = _authenticate(request, candidate)
        if principal is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY_DETAIL)
        return principal, None

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="llmapi"'


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """
    A staff user logged in through the admin may use the browsable API with their session
    (no quotas, every model). Unsafe methods need the CSRF token, as with DRF's own class.
    Requests without a staff session fall through to the next class (the API key).

    The session's user is resolved before the view by `AdminSessionMiddleware` (with the
    async ORM), so nothing here blocks.
    """

    def authenticate(self, request):
        user = getattr(request._request, "user", None)
        if user is None or not getattr(user, "is_active", False) or not user.is_staff:
            return None
        self.enforce_csrf(request)
        return staff_principal(user), None

    def authenticate_header(self, request) -> str:
        # DRF asks the first class for this header; without one a missing key would be a 403
        # instead of the seed's 401.
        return f'APIKey header="{API_KEY_HEADER}"'
