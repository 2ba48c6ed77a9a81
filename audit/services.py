"""
Writing the audit log: `record()` appends one row; `Actor` says who acted and from where.

Callers pass snapshots built by `audit.snapshots.snapshot()` as `before` and `after` (None for
a creation's before and a deletion's after). A change that changed nothing is not recorded.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any

from django.db import models

from audit.models import AuditEvent
from infra.request_ids import request_id_var


@dataclass(frozen=True)
class Actor:
    """Who acted: an account (user), or the system (a command, the identity provider)."""

    name: str
    user: Any = None
    ip: str | None = None
    request_id: str = ""

    @classmethod
    def from_request(cls, request) -> Actor:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            user = None
        request_id = request_id_var.get()
        return cls(
            name=user.get_username() if user is not None else "anonymous",
            user=user,
            ip=request.META.get("REMOTE_ADDR") or None,
            request_id="" if request_id == "-" else request_id,
        )

    @classmethod
    def system(cls, what: str) -> Actor:
        """A command run on the server: named after it and the operating-system account."""
        try:
            login = getpass.getuser()
        except (KeyError, OSError):
            login = "unknown"
        return cls(name=f"{what} (system user {login})"[:150])


def record(
    *,
    actor: Actor,
    action: str,
    target: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    team_name: str = "",
    before: dict | None = None,
    after: dict | None = None,
) -> AuditEvent | None:
    """Append one row; return it, or None when `before` and `after` are equal (no change)."""
    if before is not None and after is not None and before == after:
        return None
    if target is not None:
        object_type = object_type or target._meta.model_name or ""
        object_id = object_id or str(target.pk)
        object_repr = object_repr or str(target)
    return AuditEvent.objects.create(
        actor=actor.user,
        actor_name=actor.name[:150],
        ip=actor.ip,
        action=action[:64],
        object_type=object_type[:64],
        object_id=object_id[:64],
        object_repr=object_repr[:200],
        team_name=team_name[:100],
        before=before,
        after=after,
        request_id=actor.request_id[:64],
    )
