"""`ensure_database()`: what `serve` runs before it starts workers."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db import connection

from accounts.keys import pepper


def ensure_database() -> None:
    """
    Create the SQLite file's folder if needed, apply migrations (a no-op when up to date) and
    make sure the key pepper exists. Run once, in the parent process, before the workers
    start, so they never race to migrate.
    """
    if connection.vendor == "sqlite":
        Path(settings.DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        with connection.cursor() as cursor:
            # Write-ahead logging (kept by the file): the admin reads while the ledger writes.
            cursor.execute("PRAGMA journal_mode=WAL")
    call_command("migrate", interactive=False, verbosity=0)
    pepper()
