"""The usage ledger (one row per request) and its hourly rollups (what the dashboard reads)."""

from __future__ import annotations

from django.db import models


class UsageRecord(models.Model):
    created_at = models.DateTimeField(db_index=True)
    # The key's prefix ("" for the environment's API_KEY) and team name are copied, so the
    # ledger keeps its meaning after a key or team is deleted.
    key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, db_constraint=False
    )
    key_prefix = models.CharField(max_length=16, blank=True)
    team_name = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=200, blank=True)
    replica = models.CharField(max_length=200, blank=True)
    endpoint = models.CharField(max_length=100, blank=True)
    status = models.PositiveSmallIntegerField()
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField(default=0)
    ttft_ms = models.FloatField(null=True, blank=True)
    request_id = models.CharField(max_length=128, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["key", "created_at"]),
            # GET /v1/me: one key's rows since the last rollup.
            models.Index(fields=["key_prefix", "created_at"], name="usage_key_prefix_time"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.endpoint} {self.status}"


class UsageHourly(models.Model):
    hour = models.DateTimeField()
    key_prefix = models.CharField(max_length=16, blank=True)
    team_name = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=200, blank=True)
    requests = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)  # 4xx: refused (bad input, quotas)
    errors = models.PositiveIntegerField(default=0)  # 5xx: failed
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    latency_ms_total = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "key_prefix", "team_name", "model"], name="usage_hourly_unique"
            )
        ]
        indexes = [
            models.Index(fields=["hour"]),
            # GET /v1/me: one key's hours this month.
            models.Index(fields=["key_prefix", "hour"], name="usage_hourly_key_prefix_hour"),
        ]
        ordering = ["-hour"]
        verbose_name = "usage (hourly)"
        verbose_name_plural = "usage dashboard"

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} {self.key_prefix or 'API_KEY'} {self.model}"


class JournalSegment(models.Model):
    """
    A ledger journal segment whose rows are written (in the same transaction as its name),
    kept until its file is deleted: a segment found here is never replayed (usage/journal.py).
    """

    name = models.CharField(max_length=200, unique=True)
    written_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name
