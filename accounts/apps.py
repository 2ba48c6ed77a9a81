from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Teams and API keys"

    def ready(self) -> None:
        # Registers the OpenAPI description of the X-API-Key scheme with drf-spectacular.
        from accounts import (
            schema,  # noqa: F401
            signals,  # noqa: F401  (drops cached keys when one changes)
        )
