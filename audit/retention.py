"""Deleting audit rows older than the retention period: the only way a row is ever deleted."""

from __future__ import annotations

import datetime as dt

from django.db import models

from audit.models import AuditEvent


def prune(*, days: int, now: dt.datetime | None = None) -> int:
    """Delete rows older than `days` days; return how many."""
    now = now or dt.datetime.now(dt.UTC)
    old = AuditEvent.objects.filter(at__lt=now - dt.timedelta(days=days))
    # The append-only queryset refuses delete(); Django's own QuerySet.delete does the work.
    deleted, _ = models.QuerySet.delete(old)
    return deleted
