"""`manage.py revoke_api_key llm_<prefix>`: revoke a key by its prefix."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts import services


class Command(BaseCommand):
    help = "Revoke an API key, given its prefix (llm_<prefix>, or the whole key)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("prefix")

    def handle(self, *args, prefix: str, **options) -> None:
        try:
            api_key = services.revoke_api_key(prefix=prefix)
        except services.KeyNotFound as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Revoked llm_{api_key.prefix}_… ({api_key.name})")
