"""
What a browser session keeps of the key it logged in with: its digest (and a database key's
prefix), and how an environment key is found again from its digest. Below both
`accounts.authentication`, which reads sessions, and `accounts.key_sessions`, which writes them.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

SESSION_KEY_DIGEST = "llmapi_api_key_sha256"
SESSION_KEY_PREFIX = "llmapi_api_key_prefix"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def environment_key_for_digest(digest: str) -> int | None:
    """Index of the `API_KEY` entry with this digest, comparing every entry in constant time."""
    match = None
    for index, key in enumerate(settings.API_KEYS):
        if hmac.compare_digest(digest.encode(), key_digest(key).encode()):
            match = index
    return match
