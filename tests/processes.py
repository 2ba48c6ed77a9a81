"""
Processes the test run started, found again at its end, orphans included.

The test process makes itself a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`): a process
whose parent dies (a server's worker after its master was killed) is handed to the test
process rather than to init, so every process the run started stays its descendant and can be
named and killed when the run ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
PROC = Path("/proc")


def adopt_orphans() -> bool:
    """Become the subreaper of everything started from here on (False where unsupported)."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    return False


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None once it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _command(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200] or "?"


def descendants(root: int | None = None) -> list[int]:
    """Living (not zombie) descendants of `root` (this process); zombies are reaped."""
    root = os.getpid() if root is None else root
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is None:
                continue
            state, parent = stat
            if state == "Z":
                if parent == os.getpid():
                    with contextlib.suppress(ChildProcessError, OSError):
                        os.waitpid(int(entry.name), os.WNOHANG)
                continue
            parents[int(entry.name)] = parent
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def still_running(*, grace: float) -> list[tuple[int, str]]:
    """Descendants still alive after `grace` seconds to finish exiting: (pid, command line)."""
    deadline = time.monotonic() + grace
    while True:
        alive = descendants()
        if not alive or time.monotonic() >= deadline:
            return [(pid, _command(pid)) for pid in alive]
        time.sleep(0.1)


def kill(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    descendants()  # reap them


def kill_tree(process) -> None:
    """SIGKILL a `subprocess.Popen` and every process below it (a server and its workers)."""
    if process.poll() is None:
        kill([*descendants(process.pid), process.pid])
    process.wait()
