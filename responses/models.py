"""Responses kept for `previous_response_id`, retrieval and `input_items` (when `store` is true)."""

from __future__ import annotations

from django.db import models


class StoredResponse(models.Model):
    id = models.CharField(primary_key=True, max_length=64)
    # Who may read it: "<kind>:<key id>" of the key that made it, and that key's team (read by
    # the team's other keys when RESPONSES__SHARE_WITH_TEAM is on).
    owner = models.CharField(max_length=64)
    team_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    model = models.CharField(max_length=200)
    status = models.CharField(max_length=20)
    previous_response_id = models.CharField(max_length=64, blank=True)
    # The conversation before this response (the previous one's history, input and output),
    # this request's input items, and the response object as returned.
    history = models.JSONField(default=list)
    input_items = models.JSONField(default=list)
    response = models.JSONField(default=dict)
    size = models.PositiveIntegerField(default=0)  # bytes of the three fields above

    class Meta:
        indexes = [models.Index(fields=["owner", "created_at"])]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.id
