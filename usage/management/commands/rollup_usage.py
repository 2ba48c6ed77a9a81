"""`manage.py rollup_usage`: aggregate the ledger by hour and apply retention now."""

from django.core.management.base import BaseCommand

from usage.rollups import rollup_usage


class Command(BaseCommand):
    help = "Roll the usage ledger up by hour and delete rows past their retention."

    def handle(self, *args, **options) -> None:
        result = rollup_usage()
        self.stdout.write(
            f"{result['hours']} hourly rows recomputed; {result['purged_rows']} ledger rows and "
            f"{result['purged_hours']} hourly rows past retention deleted"
        )
