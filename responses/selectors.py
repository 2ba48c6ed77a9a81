"""Reading stored responses: only the key that made one (or its team, when shared) sees it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from infra.database import in_database_thread
from responses.models import StoredResponse


def owner_of(principal: Any) -> str:
    """The owner string of a caller's responses: its kind and key, never a secret."""
    return f"{principal.kind}:{principal.quota.key_id}"


def visible_to(principal: Any) -> QuerySet[StoredResponse]:
    """The live responses a caller may read, continue and delete."""
    mine = Q(owner=owner_of(principal))
    team_id = getattr(principal, "team_id", None)
    if settings.RESPONSES_SHARE_WITH_TEAM and team_id is not None:
        mine |= Q(team_id=team_id)
    return StoredResponse.objects.filter(mine, expires_at__gt=timezone.now())


def get_response(response_id: str, principal: Any) -> StoredResponse | None:
    if not isinstance(response_id, str) or len(response_id) > 64:
        return None
    return visible_to(principal).filter(pk=response_id).first()


aget_response = in_database_thread(get_response)
