"""`python manage.py reload_models`: check the model catalog, then make the server reload it."""

from __future__ import annotations

import os
import signal

from django.core.management.base import BaseCommand, CommandError

from audit.services import Actor, record
from inference.catalog import CatalogError
from inference.catalog.loader import load_catalog
from server.reload import pid_file


class Command(BaseCommand):
    help = "Check the model catalog and tell the running server to reload it (SIGHUP)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--check", action="store_true", help="Only check the configuration; signal nothing."
        )

    def handle(self, *args, check: bool, **options) -> None:
        try:
            catalog = load_catalog()
        except CatalogError as exc:
            raise CommandError(
                f"The catalog is broken; the server keeps its old one.\n{exc}"
            ) from None
        self.stdout.write(f"The catalog is valid: {len(catalog)} model(s) from {catalog.source}.")
        if check:
            return
        path = pid_file()
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            raise CommandError(
                f"No running server found ({path} is missing or unreadable)."
            ) from None
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise CommandError(f"No process {pid} (from {path}): is the server running?") from None
        record(
            actor=Actor.system("manage.py reload_models"),
            action="catalog.reload",
            object_type="catalog",
            object_id=str(catalog.source)[:64],
            object_repr=f"model catalog ({len(catalog)} models)",
            after={
                "source": str(catalog.source),
                "models": sorted(spec.name for spec in catalog),
            },
        )
        self.stdout.write(f"Sent SIGHUP to the server (process {pid}).")
