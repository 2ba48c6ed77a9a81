"""
`python manage.py serve`: run the gateway under uvicorn (uvloop + httptools, with the limits of
`server.http_protocol`).

With several workers, uvicorn's supervisor binds the listening socket and hands it to each
worker. On SIGTERM it used to keep its own copy open until every worker had drained, so the
kernel went on accepting connections that no one would ever serve: they hung, then were reset.
`DrainingMultiprocess` closes the parent's copy the moment SIGTERM (or SIGINT) arrives, and the
workers close theirs as their drain starts, so new connections are refused at once, as they are
with one worker.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import secrets
import signal
import threading
from types import FrameType

import uvicorn
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from uvicorn.supervisors.multiprocess import Multiprocess

from accounts.database import ensure_database
from inference.catalog import CatalogError
from inference.registry import get_registry
from observability.exposition import start_metrics_server
from observability.json_logs import apply_to_uvicorn_log_config
from observability.multiprocess import (
    mark_worker_dead,
    prepare_multiprocess_dir,
    remove_multiprocess_dir,
)
from server.http_protocol import BoundedHttpToolsProtocol
from server.reload import write_pid_file
from server.runtime import start_up_runtime

logger = logging.getLogger(__name__)


class StopRequested(threading.Event):
    """
    uvicorn's `should_exit`, which reads as set the moment a stop signal arrives. uvicorn sets
    it only when it handles its signal queue, and a dead worker found before that is replaced:
    its check of a worker waits for an answer (up to `SERVER__WORKER_HEALTHCHECK_TIMEOUT`), and
    a SIGTERM arriving meanwhile had closed the listening socket the replacement was handed. The
    replacement failed to start, the supervisor died of it, and its exit then waited for ever
    on the workers it had never stopped.
    """

    def __init__(self) -> None:
        super().__init__()
        self.signalled = False

    def is_set(self) -> bool:
        return self.signalled or super().is_set()


class DrainingMultiprocess(Multiprocess):
    """uvicorn's worker supervisor, refusing new connections as soon as the drain starts."""

    should_exit: StopRequested

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.should_exit = StopRequested()
        # uvicorn queues signals and handles them every half second; stop listening at once.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)

    def _on_stop_signal(self, sig: int, frame: FrameType | None) -> None:
        self.should_exit.signalled = True  # an assignment: safe in a signal handler
        self.stop_listening()
        self.signal_queue.append(sig)

    def stop_listening(self) -> None:
        for sock in self.sockets:
            sock.close()

    def keep_subprocess_alive(self) -> None:
        """uvicorn's restart of dead workers, then forget the live gauges of the dead ones."""
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                mark_worker_dead(pid)

    def handle_hup(self) -> None:
        """SIGHUP reloads the model catalog in every worker; uvicorn's own would restart them."""
        logger.info("Received SIGHUP: reloading the model catalog in every worker.")
        for process in self.processes:
            # Whether the process exists, not uvicorn's `is_alive()`: that waits for a
            # health-check answer, and a worker busy past it would silently miss the reload.
            if process.pid is not None and process.process.is_alive():
                with contextlib.suppress(ProcessLookupError):  # it ended in between
                    os.kill(process.pid, signal.SIGHUP)


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
        if (
            not settings.ALLOWED_HOSTS_FROM_ENVIRONMENT
            and host not in settings.SERVER_WILDCARD_ADDRESSES
        ):
            # The address bound is a host name clients may use; workers read it from here.
            os.environ["SERVER__HOST"] = host
            name = f"[{host}]" if ":" in host else host
            if name not in settings.ALLOWED_HOSTS:
                settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, name]
        # Migrations and the key pepper, once, here: the workers never race to migrate.
        ensure_database()
        start_up_runtime()  # the process's state; a single worker serves with this one
        try:
            catalog = get_registry().catalog  # reads and checks the catalog
        except (CatalogError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from None
        if any(spec.is_embedded for spec in catalog):
            from inference.backends.embedded import (
                LocalModelError,
                check_model_file,
                resolve_model_path,
            )

            try:
                check_model_file(*resolve_model_path())
            except LocalModelError as exc:
                raise CommandError(str(exc)) from None
        lines = [f"llmapi listening on http://{host}:{port}  (docs: http://{host}:{port}/docs)"]
        for spec in catalog:
            role = " (text default)" if spec is catalog.text else ""
            role += " (image default)" if spec is catalog.image else ""
            via = "the embedded model" if spec.is_embedded else f"{len(spec.servers)} server(s)"
            lines.append(f"  model {spec.name}{role}: {via}")
        if settings.LOG_FORMAT == "json":
            for line in lines:  # every line of the output parses as JSON
                logger.info(line.strip())
        else:
            self.stdout.write("\n".join(lines) + "\n")
        write_pid_file()
        self.stdout.flush()  # the generated key must reach a redirected stdout before serving
        # Workers are spawned (fresh interpreters): they see the directory in their environment
        # before they first import prometheus_client, and all record into it.
        metrics_dir = prepare_multiprocess_dir() if workers > 1 else None
        try:
            if settings.METRICS["port"]:
                start_metrics_server(
                    settings.METRICS["host"], settings.METRICS["port"], multiprocess_dir=metrics_dir
                )
            self._serve(host=host, port=port, workers=workers, access_log=access_log)
        finally:
            if metrics_dir is not None:
                remove_multiprocess_dir(metrics_dir)

    def _serve(self, *, host: str, port: int, workers: int, access_log: bool) -> None:
        config = uvicorn.Config(
            "llmapi.asgi:application",
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http=BoundedHttpToolsProtocol,
            lifespan="on",
            access_log=access_log,
            log_level="info",
            log_config=uvicorn_log_config(),
            timeout_graceful_shutdown=settings.SERVER_GRACEFUL_TIMEOUT,
            timeout_worker_healthcheck=settings.SERVER_WORKER_HEALTHCHECK_TIMEOUT,
        )
        if workers > 1:
            DrainingMultiprocess(config, sockets=[config.bind_socket()]).run()
            return
        server = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C: uvicorn has shut down already
            server.run()
        if not server.started:
            raise CommandError("The server did not start; see the log above.")


def uvicorn_log_config() -> dict:
    """uvicorn's logging, minus tracebacks for streams the gateway cut on purpose."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["stream_abort"] = {"()": "api.streaming.StreamAbortLogFilter"}
    config["handlers"]["default"]["filters"] = ["stream_abort"]
    # Secrets scrubbed from every line; one JSON object per line with LOG_FORMAT=json.
    return apply_to_uvicorn_log_config(
        config, log_format=settings.LOG_FORMAT, log_content=settings.LOG_CONTENT
    )
