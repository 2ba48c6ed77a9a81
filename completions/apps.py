from django.apps import AppConfig
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, reset_queries


class CompletionsConfig(AppConfig):
    name = "completions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the OpenAPI description of the X-API-Key scheme with drf-spectacular.
        from completions import schema  # noqa: F401

        if not settings.DATABASES:
            # Django's database housekeeping listens to request_started; with sync receivers,
            # every request would hop to a thread to run them. There is no database to tidy.
            request_started.disconnect(reset_queries)
            request_started.disconnect(close_old_connections)
            request_finished.disconnect(close_old_connections)
