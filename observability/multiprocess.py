"""
The multiprocess directory: where worker processes keep their metric values so that a scrape
answered by any one worker reports the sum over all of them.

Lifecycle, driven by the process that starts the workers (`manage.py serve`):
1. `prepare_multiprocess_dir()` before any worker starts: a fresh, empty directory for this
   server run, exported as PROMETHEUS_MULTIPROC_DIR so workers inherit it. prometheus_client
   reads the variable when first imported, so a worker started afterwards writes there.
2. `mark_worker_dead(pid)` whenever the supervisor sees a worker exit. Counters and histograms
   of a dead worker stay (totals must not go backwards when a worker is replaced); only its
   live gauges (in-flight requests, ledger queue depth) are removed. Scrapes also do this for
   any worker that is gone (`prune_dead_workers`), so a missed hook heals itself.
3. `remove_multiprocess_dir(path)` when the server stops.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from prometheus_client import multiprocess

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"

# Files of live gauges: gauge_livesum_1234.db, gauge_livemostrecent_1234.db, ...
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def prepare_multiprocess_dir() -> Path:
    """Create a fresh, empty metrics directory for this server run and export it."""
    path = Path(tempfile.mkdtemp(prefix="llmapi-metrics-"))
    os.environ[ENV_VAR] = str(path)
    return path


def remove_multiprocess_dir(path: str | os.PathLike[str]) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if os.environ.get(ENV_VAR) == str(path):
        del os.environ[ENV_VAR]


def mark_worker_dead(pid: int, path: str | os.PathLike[str] | None = None) -> None:
    """Forget the live gauges of a worker that exited (its counters stay)."""
    directory = path or os.environ.get(ENV_VAR)
    if directory:
        multiprocess.mark_process_dead(pid, str(directory))


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def prune_dead_workers(path: str | os.PathLike[str]) -> list[int]:
    """Mark every worker whose live-gauge files remain but whose process is gone as dead."""
    dead: set[int] = set()
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return []
    for name in names:
        match = _LIVE_GAUGE_FILE.match(name)
        if match:
            pid = int(match.group(1))
            if pid != os.getpid() and pid not in dead and not _is_alive(pid):
                dead.add(pid)
    for pid in dead:
        mark_worker_dead(pid, path)
    return sorted(dead)
