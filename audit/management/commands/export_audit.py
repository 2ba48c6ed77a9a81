"""`manage.py export_audit`: the audit log as JSON lines, oldest first."""

from __future__ import annotations

import datetime as dt
import json

from django.core.management.base import BaseCommand, CommandError

from audit.models import AuditEvent


def parse_moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"Not an ISO 8601 date or time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class Command(BaseCommand):
    help = "Write the audit log as JSON lines (one object per change), oldest first."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", help="Only rows at or after this ISO 8601 time.")
        parser.add_argument("--until", help="Only rows before this ISO 8601 time.")
        parser.add_argument("--output", "-o", help="Write to this file instead of stdout.")

    def handle(self, *args, since: str | None, until: str | None, output: str | None, **options):
        rows = AuditEvent.objects.order_by("at", "id")
        if since:
            rows = rows.filter(at__gte=parse_moment(since))
        if until:
            rows = rows.filter(at__lt=parse_moment(until))
        stream = open(output, "w", encoding="utf-8") if output else self.stdout  # noqa: SIM115
        try:
            for event in rows.iterator(chunk_size=1000):
                stream.write(json.dumps(event.as_json(), sort_keys=True) + "\n")
        finally:
            if output:
                stream.close()
