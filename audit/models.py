"""
The audit log: one row per change to teams, memberships, keys, limits, weights and the model
catalog (who, when, from where, what, before and after).

Rows are append-only. Saving an existing row, deleting one, or `update()`/`delete()` on a
queryset raises `AppendOnly`; the retention job (`audit.retention.prune`) is the only deleter.
A key's secret never reaches a row: snapshots are built by `audit.snapshots`, which never reads
a secret's hash.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AppendOnly(Exception):
    """An audit row was about to be changed or deleted."""


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnly("Audit rows are never changed.")

    def delete(self):
        raise AppendOnly(
            "Audit rows are deleted by the retention job only (manage.py prune_audit)."
        )


class AuditEvent(models.Model):
    at = models.DateTimeField("when", default=timezone.now, db_index=True, editable=False)
    # The account that acted (null for the system: a command, the identity provider's sync).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    # Kept as text too: the row still says who it was after the account is gone.
    actor_name = models.CharField("who", max_length=150, db_index=True, editable=False)
    ip = models.GenericIPAddressField("from (IP)", null=True, blank=True, editable=False)
    # What happened: "<object type>.<verb>", e.g. key.create, membership.delete, catalog.reload.
    action = models.CharField(max_length=64, db_index=True, editable=False)
    object_type = models.CharField(max_length=64, editable=False)
    object_id = models.CharField(max_length=64, blank=True, editable=False)
    object_repr = models.CharField("object", max_length=200, blank=True, editable=False)
    # The team the object belongs to, when it belongs to one (for a team admin's view).
    team_name = models.CharField("team", max_length=100, blank=True, db_index=True, editable=False)
    before = models.JSONField(null=True, blank=True, editable=False)
    after = models.JSONField(null=True, blank=True, editable=False)
    request_id = models.CharField(max_length=64, blank=True, editable=False)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit event"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.object_repr}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and not self._state.adding:
            raise AppendOnly("Audit rows are never changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnly(
            "Audit rows are deleted by the retention job only (manage.py prune_audit)."
        )

    def as_json(self) -> dict:
        """The row as one JSON object (the export's line)."""
        return {
            "id": self.pk,
            "at": self.at.isoformat(),
            "actor": self.actor_name,
            "actor_id": self.actor_id,
            "ip": self.ip,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "object": self.object_repr,
            "team": self.team_name,
            "before": self.before,
            "after": self.after,
            "request_id": self.request_id,
        }
