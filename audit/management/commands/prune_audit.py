"""`manage.py prune_audit`: delete audit rows older than AUDIT__RETENTION_DAYS (run it daily)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit.retention import prune


class Command(BaseCommand):
    help = "Delete audit rows older than the retention period (AUDIT__RETENTION_DAYS)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--days", type=int, default=None, help="Override the period.")

    def handle(self, *args, days: int | None, **options) -> None:
        days = settings.AUDIT_RETENTION_DAYS if days is None else days
        if days < 1:
            raise CommandError("--days must be at least 1.")
        deleted = prune(days=days)
        self.stdout.write(f"Deleted {deleted} audit row(s) older than {days} day(s).")
