"""Creating and revoking keys, and writing when keys were last used."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from accounts import selectors
from accounts.keys import generate_key, hash_secret
from accounts.models import ApiKey, Team
from audit.services import Actor, record
from audit.snapshots import snapshot


class AccountsError(Exception):
    """Base of this app's errors."""


class KeyNotFound(AccountsError):
    pass


@dataclass(frozen=True)
class CreatedKey:
    api_key: ApiKey
    full_key: str  # shown once; only its hash is stored


def create_api_key(
    *,
    name: str,
    team: Team,
    allowed_models: list[str] | None = None,
    expires_at: dt.datetime | None = None,
    created_by=None,
    priority: str = ApiKey.Priority.INTERACTIVE,
    **limits: int | None,
) -> CreatedKey:
    """Create a key and return it with its full text, which is never available again."""
    new = generate_key()
    while ApiKey.objects.filter(prefix=new.prefix).exists():  # 36^8 prefixes: rare
        new = generate_key()
    api_key = ApiKey.objects.create(
        name=name,
        team=team,
        prefix=new.prefix,
        secret_hash=hash_secret(new.secret),
        allowed_models=list(allowed_models or []),
        expires_at=expires_at,
        created_by=created_by,
        priority=priority,
        **limits,
    )
    return CreatedKey(api_key=api_key, full_key=new.full)


def assign_new_secret(api_key: ApiKey) -> str:
    """Give an unsaved key (from the admin's form) its prefix and hash; return the full key."""
    new = generate_key()
    while ApiKey.objects.filter(prefix=new.prefix).exists():
        new = generate_key()
    api_key.prefix = new.prefix
    api_key.secret_hash = hash_secret(new.secret)
    return new.full


def revoke_api_key(*, prefix: str, actor: Actor | None = None) -> ApiKey:
    """
    Revoke a key by its prefix (`llm_<prefix>_…` or the bare prefix), in the audit log as
    `actor` (by default, the command that called this).
    """
    actor = actor or Actor.system("manage.py revoke_api_key")
    prefix = prefix.removeprefix("llm_").split("_", 1)[0]
    with transaction.atomic():
        api_key = (
            ApiKey.objects.select_for_update().select_related("team").filter(prefix=prefix).first()
        )
        if api_key is None:
            raise KeyNotFound(f"No API key with prefix {prefix!r}")
        if not api_key.revoked:
            before = snapshot(api_key)
            api_key.revoked = True
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked", "revoked_at"])
            record(
                actor=actor,
                action="key.revoke",
                target=api_key,
                object_repr=f"{api_key.name} (llm_{api_key.prefix}_…)",
                team_name=api_key.team.name,
                before=before,
                after=snapshot(api_key),
            )
    selectors.forget_key(prefix)
    return api_key


def flush_last_used() -> int:
    """Write the keys' last-used times collected by the request path (one UPDATE per key)."""
    seen = selectors.take_last_used()
    for key_id, when in seen.items():
        moment = dt.datetime.fromtimestamp(when, dt.UTC)
        ApiKey.objects.filter(pk=key_id).update(last_used_at=moment)
    return len(seen)
