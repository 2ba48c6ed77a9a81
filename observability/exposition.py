"""
Turning the metrics into the Prometheus text format (or OpenMetrics, when a scraper asks).

In multiprocess mode a scrape reads every worker's files, so whichever worker answers reports
the whole server; otherwise it reports this process's registry.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from observability import metrics
from observability.multiprocess import prune_dead_workers


class LiveWorkersCollector(MultiProcessCollector):
    """MultiProcessCollector that first forgets the live gauges of workers that are gone."""

    def __init__(self, registry: CollectorRegistry | None, path: str) -> None:
        self.directory = path
        super().__init__(registry, path=path)

    def collect(self) -> Any:
        prune_dead_workers(self.directory)
        return super().collect()


@lru_cache(maxsize=4)
def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry over a multiprocess directory (it reads the files afresh on each scrape)."""
    registry = CollectorRegistry()
    LiveWorkersCollector(registry, path)
    return registry


def scrape_registry() -> CollectorRegistry:
    if metrics.MULTIPROCESS and metrics.MULTIPROCESS_DIR:
        return multiprocess_registry(metrics.MULTIPROCESS_DIR)
    return metrics.REGISTRY


def render_metrics(accept: str | None = None) -> tuple[bytes, str]:
    """The exposition body and its content type, chosen from the scraper's Accept header."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(scrape_registry()), content_type


def start_metrics_server(
    host: str, port: int, *, multiprocess_dir: str | os.PathLike[str] | None = None
) -> tuple[Any, threading.Thread]:
    """
    Serve /metrics on a port of its own, from a daemon thread of the calling process.

    Run it in the process that starts the workers and pass the multiprocess directory when
    there are several; with one worker serving in this very process, pass None.
    """
    registry = (
        multiprocess_registry(str(multiprocess_dir)) if multiprocess_dir else scrape_registry()
    )
    server, thread = start_http_server(port, addr=host, registry=registry)
    return server, thread
