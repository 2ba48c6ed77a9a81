from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Teams and API keys"

    def ready(self) -> None:
        # Registers the OpenAPI description of the X-API-Key scheme with drf-spectacular.
        from accounts import (
            login_limits,  # noqa: F401  (logs lock-outs)
            schema,  # noqa: F401
            signals,  # noqa: F401  (drops cached keys when one changes)
        )
        from limits import revocations

        # A key revoked in another process (published through Redis) is dropped here at once.
        revocations.on_revocation(signals.drop_revoked)
