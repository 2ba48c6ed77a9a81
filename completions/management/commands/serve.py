"""`python manage.py serve`: run the gateway under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import copy
import os
import secrets

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from completions.registry import get_model_spec


class Command(BaseCommand):
    help = "Serve the API with uvicorn."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=settings.SERVER_HOST, help="Address to bind.")
        parser.add_argument("--port", type=int, default=settings.SERVER_PORT, help="Port to bind.")
        parser.add_argument(
            "--workers",
            type=int,
            default=settings.SERVER_WORKERS,
            help="Worker processes. Each has its own concurrency limits (and its own copy of "
            "the embedded model).",
        )
        parser.add_argument("--access-log", action="store_true", help="Log every request.")

    def handle(
        self, *args, host: str, port: int, workers: int, access_log: bool, **options
    ) -> None:
        if not settings.API_KEYS:
            # Workers are started from this process's environment, so they all share this key.
            key = secrets.token_urlsafe(24)
            settings.API_KEYS = [key]  # this process serves when there is one worker
            os.environ["API_KEY"] = key  # worker processes read it from the environment
            self.stdout.write(
                self.style.WARNING(
                    "API_KEY is not set; generated a key for this run (set API_KEY to choose one):\n"
                    f"  X-API-Key: {key}\n"
                )
            )
        text = get_model_spec("text")
        if text.is_local:
            from completions.local_model import (
                LocalModelError,
                check_model_file,
                resolve_model_path,
            )

            try:
                check_model_file(*resolve_model_path())
            except LocalModelError as exc:
                raise CommandError(str(exc)) from None
        self.stdout.write(
            f"llmapi listening on http://{host}:{port}  (docs: http://{host}:{port}/docs)\n"
            f"  text model:  {text.name} via {'the embedded model' if text.is_local else 'its server'}\n"
        )
        uvicorn.run(
            "llmapi.asgi:application",
            host=host,
            port=port,
            workers=workers if workers > 1 else None,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=access_log,
            log_level="info",
            log_config=uvicorn_log_config(),
            timeout_graceful_shutdown=settings.SERVER_GRACEFUL_TIMEOUT,
        )


def uvicorn_log_config() -> dict:
    """uvicorn's logging, minus tracebacks for streams the gateway cut on purpose."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["stream_abort"] = {
        "()": "completions.streaming.StreamAbortLogFilter"
    }
    config["handlers"]["default"]["filters"] = ["stream_abort"]
    return config
