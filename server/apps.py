from django.apps import AppConfig


class ServerConfig(AppConfig):
    name = "server"

    def ready(self) -> None:
        from infra.database import disconnect_per_request_receivers

        # Database connections are released where they are used (server/database.py).
        disconnect_per_request_receivers()
