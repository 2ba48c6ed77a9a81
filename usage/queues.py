"""
The line for the models' slots, for the staff's usage dashboard: requests waiting now and how
long requests waited, by model, team and priority class.

From the sources `/metrics` reads: this server's metrics (every worker of this host in
multiprocess mode): `llmapi_queue_length` and `llmapi_queue_wait_seconds`; and with REDIS_URL
the shared lines the slot scripts keep in Redis, which every worker of every host joins
(`limits.queue_lines`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync

from inference.registry import get_registry
from limits import redis_client
from limits.queue_lines import shared_lines
from observability.exposition import scrape_registry
from observability.metrics import NO_TEAM, recording

LENGTH = "llmapi_queue_length"
WAIT = "llmapi_queue_wait_seconds"


@dataclass
class QueueRow:
    model: str
    team: str
    priority: str
    waiting: int = 0  # now, in this server's workers
    waiting_everywhere: int | None = None  # now, in every worker of every host (Redis)
    waited: int = 0  # requests that waited for a slot (and got it) since the workers started
    wait_seconds: float = 0.0  # the sum of their waits
    buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count)

    @property
    def mean_wait(self) -> float | None:
        return self.wait_seconds / self.waited if self.waited else None

    @property
    def p95_wait(self) -> float | None:
        return quantile(0.95, self.buckets)


@dataclass(frozen=True)
class QueueFigures:
    rows: list[QueueRow]
    shared: bool  # the "every host" figures are there (REDIS_URL set and Redis answered)
    shared_configured: bool  # REDIS_URL is set
    recorded: bool  # this server records metrics (METRICS__TOKEN or METRICS__PORT set)


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram's cumulative buckets, as PromQL's histogram_quantile."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower_le  # beyond the last finite bucket: its bound, as PromQL does
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le


def _model_names() -> dict[str, list[str]]:
    """Slot set -> the models that share it (with Redis: a model server's name or origin)."""
    sets: dict[str, list[str]] = {}
    for spec in get_registry().catalog:
        if not spec.is_embedded:
            sets.setdefault(spec.origin or spec.name, []).append(spec.name)
    return sets


def queue_figures() -> QueueFigures:
    """What the dashboard shows about the line (see the module docstring)."""
    rows: dict[tuple[str, str, str], QueueRow] = {}

    def row(model: str, team: str, priority: str) -> QueueRow:
        key = (model, team, priority)
        if key not in rows:
            rows[key] = QueueRow(model, team, priority)
        return rows[key]

    for family in scrape_registry().collect():
        if family.name not in (LENGTH, WAIT):
            continue
        for sample in family.samples:
            labels = sample.labels
            entry = row(labels["model"], labels["team"], labels["priority"])
            if sample.name == LENGTH:
                entry.waiting += int(sample.value)
            elif sample.name == f"{WAIT}_count":
                entry.waited += int(sample.value)
            elif sample.name == f"{WAIT}_sum":
                entry.wait_seconds += sample.value
            elif sample.name == f"{WAIT}_bucket":
                entry.buckets.append((float(labels["le"]), sample.value))

    sets = _model_names()
    shared = async_to_sync(shared_lines)(list(sets))
    if shared is not None:
        for each in rows.values():
            each.waiting_everywhere = 0
        for (slot_set, team, priority), count in shared.items():
            model = ", ".join(sets.get(slot_set, [slot_set]))
            entry = row(model, team or NO_TEAM, priority)
            entry.waiting_everywhere = (entry.waiting_everywhere or 0) + count
    visible = [r for r in rows.values() if r.waiting or r.waiting_everywhere or r.waited]
    visible.sort(key=lambda r: (r.model, -(r.waiting_everywhere or r.waiting), r.team, r.priority))
    return QueueFigures(visible, shared is not None, redis_client.enabled(), recording())
