"""
The key format and its hashing: `llm_<prefix>_<secret>`, an HMAC-SHA256 of the secret keyed
with the pepper, compared in constant time.

The pepper is `API_KEYS__PEPPER` when set. Otherwise it is read from `API_KEYS__PEPPER_FILE`
(by default `var/api-key-pepper`, beside the SQLite database), which is generated once, with
mode 0600, the first time it is needed. Losing or changing the pepper invalidates every key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

from django.conf import settings

from infra.runtime import get_runtime

KEY_PREFIX = "llm_"
PREFIX_LENGTH = 8
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True, slots=True)
class NewKey:
    prefix: str
    secret: str

    @property
    def full(self) -> str:
        return f"{KEY_PREFIX}{self.prefix}_{self.secret}"


def generate_key() -> NewKey:
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    return NewKey(prefix=prefix, secret=secrets.token_urlsafe(32))


def split_key(candidate: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    if not candidate.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = candidate[len(KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != PREFIX_LENGTH or not secret or len(secret) > 128:
        return None
    return prefix, secret


class PepperState:
    """The runtime's pepper, read (or made) on first use from the settings that name it."""

    SETTINGS = ("API_KEYS_PEPPER", "API_KEYS_PEPPER_FILE")

    def __init__(self) -> None:
        self.value = _read_or_make_pepper()


def pepper() -> bytes:
    return get_runtime().part(PepperState).value


def _read_or_make_pepper() -> bytes:
    if settings.API_KEYS_PEPPER:
        return settings.API_KEYS_PEPPER.encode()
    path = settings.API_KEYS_PEPPER_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32).encode()
    try:
        # O_EXCL: when two processes race, one writes and both read the winner's value.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as file:
        file.write(value)
    return value


def hash_secret(secret: str) -> str:
    return hmac.new(pepper(), secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())
