"""
Reloading the model catalog without a restart.

The server writes its process id to `SERVER__PID_FILE`. `manage.py reload_models` checks the
catalog first (a broken file is refused there, with its line and field) and then sends SIGHUP;
every worker then rebuilds its catalog, keeping the old one if the file broke in between.
Requests in flight finish on the configuration they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from django.conf import settings

from inference.catalog import CatalogError
from inference.registry import get_registry
from observability import metrics

logger = logging.getLogger(__name__)


def pid_file() -> Path:
    return Path(settings.SERVER_PID_FILE)


def write_pid_file() -> None:
    path = pid_file()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{os.getpid()}\n")


def reload_catalog() -> bool:
    """Reload in this process; on a broken configuration, log why and keep the old catalog."""
    try:
        registry = get_registry()
        registry.reload()
    except CatalogError as exc:
        logger.error("The model catalog was not reloaded; the old one stays. %s", exc)
        return False
    metrics.register_models(spec.name for spec in registry.catalog)
    return True


def install_reload_signal() -> None:
    """On SIGHUP, reload the catalog (off the event loop: it reads a file)."""
    loop = asyncio.get_running_loop()

    def on_hangup() -> None:
        loop.create_task(asyncio.to_thread(reload_catalog))

    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals on this loop
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
