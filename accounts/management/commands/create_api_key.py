"""
`manage.py create_api_key --team T --name N [--priority batch] [--team-weight 3]`: create a
key and print it (once).
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from accounts import services
from accounts.models import ApiKey, Team
from audit.services import Actor, record
from audit.snapshots import snapshot


class Command(BaseCommand):
    help = "Create an API key for a team (the team is created if it does not exist)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--team", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--models", default="", help="Comma-separated allowed models.")
        parser.add_argument("--expires-in-days", type=float, default=None)
        parser.add_argument(
            "--priority",
            choices=ApiKey.Priority.values,
            default=ApiKey.Priority.INTERACTIVE,
            help="The key's priority class for a busy model.",
        )
        parser.add_argument(
            "--team-weight",
            type=float,
            default=None,
            help="Set the team's weight (its share of a busy model; default 1).",
        )
        for limit in (
            "requests-per-minute",
            "tokens-per-minute",
            "concurrent-requests",
            "tokens-per-day",
            "tokens-per-month",
        ):
            parser.add_argument(f"--{limit}", type=int, default=None)

    def handle(
        self,
        *args,
        team: str,
        name: str,
        models: str,
        expires_in_days,
        priority: str,
        team_weight: float | None,
        **options,
    ) -> None:
        if expires_in_days is not None and expires_in_days <= 0:
            raise CommandError("--expires-in-days must be positive")
        if team_weight is not None and not 0.01 <= team_weight <= 1000:
            raise CommandError("--team-weight must be between 0.01 and 1000")
        actor = Actor.system("manage.py create_api_key")
        team_obj, team_created = Team.objects.get_or_create(name=team)
        if team_created:
            record(
                actor=actor,
                action="team.create",
                target=team_obj,
                team_name=team_obj.name,
                after=snapshot(team_obj),
            )
        if team_weight is not None and team_obj.weight != team_weight:
            before = snapshot(team_obj)
            team_obj.weight = team_weight
            team_obj.save(update_fields=["weight"])
            record(
                actor=actor,
                action="team.weight",
                target=team_obj,
                team_name=team_obj.name,
                before=before,
                after=snapshot(team_obj),
            )
        expires_at = (
            dt.datetime.now(dt.UTC) + dt.timedelta(days=expires_in_days)
            if expires_in_days is not None
            else None
        )
        limits = {
            field: options[field]
            for field in (
                "requests_per_minute",
                "tokens_per_minute",
                "concurrent_requests",
                "tokens_per_day",
                "tokens_per_month",
            )
        }
        created = services.create_api_key(
            name=name,
            team=team_obj,
            allowed_models=[m.strip() for m in models.split(",") if m.strip()],
            expires_at=expires_at,
            priority=priority,
            **limits,
        )
        record(
            actor=actor,
            action="key.create",
            target=created.api_key,
            object_repr=f"{created.api_key.name} (llm_{created.api_key.prefix}_…)",
            team_name=team_obj.name,
            after=snapshot(created.api_key),
        )
        self.stderr.write("Copy the key now; it is not stored and will not be shown again.")
        self.stdout.write(created.full_key)
