"""
Files and batches of OpenAI's Batch API, and the lines of each batch.

A file's bytes live on disk (`batches.storage`); its row says whose it is. A batch's lines
are rows of their own, each with its request, its state and, once it ran, its result: any
gateway process claims pending lines with a lease (`batches.selectors.claim_lines`), so two
processes never run one line, and a line whose lease ran out (its process died) is claimed
again. A line's result is written once, by the holder of its lease.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class StoredFile(models.Model):
    """An uploaded batch input, or a batch's output or error file."""

    id = models.CharField(primary_key=True, max_length=40, editable=False)
    owner = models.CharField(max_length=64, db_index=True, editable=False)
    purpose = models.CharField(max_length=20)
    filename = models.CharField(max_length=255)
    bytes = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Past this it is gone for its owner, and the runners delete it (None: kept until deleted).
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "file"

    def __str__(self) -> str:
        return f"{self.id} ({self.filename})"


class Batch(models.Model):
    """One batch: its input file, its status, and its output and error files once it ends."""

    class Status(models.TextChoices):
        VALIDATING = "validating"
        FAILED = "failed"
        IN_PROGRESS = "in_progress"
        FINALIZING = "finalizing"
        COMPLETED = "completed"
        EXPIRED = "expired"
        CANCELLING = "cancelling"
        CANCELLED = "cancelled"

    id = models.CharField(primary_key=True, max_length=40, editable=False)
    owner = models.CharField(max_length=64, db_index=True, editable=False)
    # For the admin: which key and team made it.
    owner_name = models.CharField(max_length=100, blank=True, editable=False)
    endpoint = models.CharField(max_length=40)
    input_file_id = models.CharField(max_length=40)
    completion_window = models.CharField(max_length=10, default="24h")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.VALIDATING)
    # The status a batch ends with once its running lines are done: "" (completed), or
    # failed / cancelled / expired, with `errors` saying why.
    ending = models.CharField(max_length=12, blank=True, default="")
    errors = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(null=True, blank=True)
    output_file_id = models.CharField(max_length=40, blank=True, default="")
    error_file_id = models.CharField(max_length=40, blank=True, default="")
    total = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    in_progress_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "batches"
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return self.id


class BatchLine(models.Model):
    """One request of a batch, from its validated input line to its result."""

    class State(models.TextChoices):
        PENDING = "pending"  # waiting to be claimed
        RUNNING = "running"  # claimed: `lease_owner` runs it until `lease_until`
        DONE = "done"  # answered: `result` is its output-file line
        FAILED = "failed"  # invalid, refused or failed: `result` is its error-file line

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="lines")
    index = models.PositiveIntegerField()  # its line in the input file, from 0
    custom_id = models.CharField(max_length=512)
    url = models.CharField(max_length=40)
    body = models.JSONField(null=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    lease_owner = models.CharField(max_length=100, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)  # a retry's back-off
    attempts = models.PositiveSmallIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "index"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "index"], name="batch_line_index"),
        ]
        indexes = [models.Index(fields=["batch", "state"])]

    def __str__(self) -> str:
        return f"{self.batch_id}#{self.index}"
