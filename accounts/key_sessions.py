"""
The browsable API's "log in with API key" session: opening and closing it.

A person using the browsable API from a plain browser cannot set a header, so /api-auth/key
takes the key once and keeps a fingerprint of it in a Django session (kept on the server:
the cookie holds only the session's random id, and logging out deletes it there).
`accounts.authentication.ApiKeyAuthentication` then accepts requests without the header on
that session, with Django's CSRF check on unsafe methods.

The session holds a digest of the key, never the key: a session store is readable by whoever
operates it. For a key from `API_KEY` the digest stops matching as soon as the key is removed
from it; for a database key the session also names the key's prefix, and stops working
when the key is revoked, expires or is deleted.
"""

from __future__ import annotations

import hmac

from django.middleware.csrf import rotate_token

from accounts.authentication import (
    INVALID_KEY_DETAIL,
    MISSING_KEY_DETAIL,
    ApiKeyAuthentication,
    resolve_key,
    session_principal,
)
from accounts.principals import Principal
from accounts.session_keys import (
    SESSION_KEY_DIGEST,
    SESSION_KEY_PREFIX,
    environment_key_for_digest,
    key_digest,
)

__all__ = [
    "INVALID_KEY_DETAIL",
    "MISSING_KEY_DETAIL",
    "SESSION_KEY_DIGEST",
    "SESSION_KEY_PREFIX",
    "ApiKeyAuthentication",
    "environment_key_for_digest",
    "key_digest",
    "key_is_valid",
    "log_in_session",
    "log_out_session",
    "session_client",
]


def key_is_valid(candidate: str, keys: list[str]) -> int | None:
    """Return the index of the matching key, comparing every key in constant time."""
    match = None
    candidate_bytes = candidate.encode()
    for index, key in enumerate(keys):
        if hmac.compare_digest(candidate_bytes, key.encode()):
            match = index
    return match


def log_in_session(request, key: str) -> Principal | None:
    """
    Check `key` exactly as the header is checked and, when it is valid, keep its digest in
    the request's session (under a new session id and CSRF token, as Django's own login
    does, so neither can be planted beforehand). Runs in a worker thread (a sync view), where
    a database key can be looked up.
    """
    principal = resolve_key(key) if key else None
    if principal is None:
        return None
    request.session.cycle_key()
    rotate_token(request)
    request.session[SESSION_KEY_DIGEST] = key_digest(key)
    if principal.kind == "key":
        request.session[SESSION_KEY_PREFIX] = principal.prefix
    return principal


def log_out_session(request) -> None:
    request.session.flush()


def session_client(request) -> Principal | None:
    """The caller whose key the browser session carries, if that key is still valid."""
    return session_principal(request)
