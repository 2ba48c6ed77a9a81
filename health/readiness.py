"""
Readiness reports that cost the same however often they are asked for and however many
models there are.

A full report probes every server of every model (`inference.services.readiness`): with
10,000 models that is 10,000 requests and a megabyte and a half of JSON. So a worker probes
at most once per `HEALTH__READYZ_CACHE_SECONDS` (callers arriving meanwhile share the round
in flight, or its answer), and `/readyz` answers with a summary of a few hundred bytes: ready
or not, how many models are, and the first names that are not. The per-model, per-server
report is there for those who may see it (`?details=true`, see `health.apis`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from inference import services
from infra.runtime import get_runtime

# The names of models that are not ready, listed in the summary; the rest are counted.
SUMMARY_NAMES = 20

Report = dict[str, Any]


class ReadinessReports:
    """The latest full report of this worker, refreshed when it is older than `max_age`."""

    def __init__(
        self,
        *,
        compute: Callable[[], Awaitable[Report]] | None = None,
        max_age: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._compute = compute or services.readiness
        self._max_age = max_age
        self._clock = clock
        self._report: Report | None = None
        self._summary: Report | None = None
        self._taken_at = 0.0
        self._pending: asyncio.Future[Report] | None = None
        self._pending_loop: asyncio.AbstractEventLoop | None = None

    @property
    def max_age(self) -> float:
        if self._max_age is not None:
            return self._max_age
        return settings.HEALTH_READYZ_CACHE_SECONDS

    async def report(self) -> Report:
        """The full report: the cached one while it is fresh, or the next round's."""
        if self._report is not None and self._clock() - self._taken_at < self.max_age:
            return self._report
        loop = asyncio.get_running_loop()
        if self._pending is None or self._pending_loop is not loop:
            self._pending = loop.create_task(self._refresh())
            self._pending_loop = loop
        # Shielded: a caller that goes away does not cancel the round the others wait for.
        return await asyncio.shield(self._pending)

    async def summary(self) -> Report:
        report = await self.report()
        if self._summary is None or self._summary["_of"] is not report:
            self._summary = {"_of": report, "summary": summarize(report)}
        return self._summary["summary"]

    async def _refresh(self) -> Report:
        started = self._clock()
        try:
            report = await self._compute()
            self._report, self._summary, self._taken_at = report, None, started
            return report
        finally:
            self._pending = None


def summarize(report: Report) -> Report:
    """Ready or not, the defaults, and how many models are ready (naming the first that are not)."""
    models = report["models"]
    not_ready = [name for name, model in models.items() if not model["ready"]]
    return {
        "ready": report["ready"],
        "defaults": report["defaults"],
        "models_total": len(models),
        "models_ready": len(models) - len(not_ready),
        "not_ready": not_ready[:SUMMARY_NAMES],
        "not_ready_unlisted": max(0, len(not_ready) - SUMMARY_NAMES),
    }


def visible_to(report: Report, may_see: Callable[[str], bool] | None) -> Report:
    """The full report with only the models `may_see` allows (all of them when it is None)."""
    if may_see is None:
        return report
    models = {key: model for key, model in report["models"].items() if may_see(model["name"])}
    return {**report, "models": models}


def reports() -> ReadinessReports:
    """The runtime's reports."""
    return get_runtime().part(ReadinessReports)
