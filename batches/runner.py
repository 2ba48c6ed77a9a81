"""
The batch runner: one per gateway process, started and stopped by the server's lifespan.

    await runner.start()     # at start-up (no-op with BATCHES__RUN=false)
    await runner.stop()      # at shutdown: running lines are given back for another process

It keeps up to BATCHES__CONCURRENCY lines in flight, claimed a few at a time
(`batches.leases`), and runs each as its batch's owner through the accounted path
(`batches.dispatch`), at the `batch` priority: each line waits for the model's concurrency
slot like any request, behind every interactive request waiting for it. With more lines in
flight than the model has slots, a slot that frees always has a line ready to take it.
While lines run their leases are renewed; a process that dies stops renewing, and its lines
are claimed again by another once their lease passes. A line's result is written only by
the holder of its lease; results that end together are written in one statement. Now and
then it also deletes expired files (`batches.services.clean_files`).

What a line's failure means for it:

* a model server failure (502, 503, 504): tried again after a pause, up to
  BATCHES__MAX_ATTEMPTS times, then an error-file entry;
* the model's slots busy, or the key's tokens per minute spent: tried again after the
  Retry-After, not counted as an attempt (the batch pauses in this process meanwhile);
* a day or month token budget of the key or its team spent, or the key revoked: the batch
  stops and ends `failed`, its `errors` saying which budget (`budget_spent`);
* a line that alone may use more tokens than a limit: its error-file entry (the 429 the
  interactive API answers), and the other lines go on;
* anything else (an unknown model, a refused request): the line's error-file entry, with the
  status and the error body the interactive API would have answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.conf import settings
from django.db import connections

from accounts.principals import Principal
from batches import leases
from batches.dispatch import ENDPOINTS, batch_caller, error_body
from batches.models import Batch
from batches.owners import load_owner_principal
from batches.services import clean_files, new_request_id
from inference.exceptions import ModelBusy
from infra.database import close_connections
from infra.request_ids import request_id_var
from infra.runtime import get_runtime
from limits.quotas import QuotaExceeded, format_reset
from limits.slots import is_preemption
from observability import metrics

logger = logging.getLogger(__name__)
T = TypeVar("T")

RETRIED_STATUSES = frozenset({502, 503, 504})
# A failed try waits this long, doubled at each attempt (at most a minute).
RETRY_BASE_SECONDS = 1.0
# How long an owner's caller (its key and limits) is reused before it is read again.
OWNER_CACHE_SECONDS = 10.0
# How often batches are swept (see `_tick`) while every claim finds lines.
SWEEP_BUSY_SECONDS = 5.0
# How often expired files (and the leftovers of crashed uploads) are deleted.
FILES_CLEANUP_SECONDS = 600.0


class DatabaseThread:
    """
    The runner's database work, in one thread of its own that keeps its connection between
    calls (a claim or a line's result is one short statement; opening a connection for each
    would cost more). A connection an error left unusable is closed, and opened again by the
    next call.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-db")

    async def run(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(_checked, func, *args, **kwargs)
        )

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, close_connections)
        self._executor.shutdown(wait=False)


def _checked(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return func(*args, **kwargs)
    except Exception:
        for connection in connections.all(initialized_only=True):
            connection.close_if_unusable_or_obsolete()
        raise


class BatchRunner:
    def __init__(
        self,
        *,
        concurrency: int,
        lease_seconds: float,
        poll_seconds: float,
        max_attempts: int,
        worker: str | None = None,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.claim_at = max(1, self.concurrency // 4)
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.max_attempts = max(1, max_attempts)
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: dict[int, asyncio.Task[None]] = {}
        self._paused: dict[str, float] = {}  # batch id -> monotonic time it may run again
        self._owners: dict[str, tuple[float, Principal | None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._last_sweep = self._last_claim = self._last_cleanup = -math.inf
        self._short = True  # the last claim found fewer lines than it asked for
        self._db = DatabaseThread()
        # Results waiting to be written, each with the future its line awaits.
        self._results: list[tuple[int, bool, dict[str, Any], asyncio.Future[bool]]] = []
        self._writing: asyncio.Task[None] | None = None

    # --- start and stop ---------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="batch-runner")
        self._renew_task = asyncio.create_task(self._renew(), name="batch-leases")

    def wake(self) -> None:
        """Look for work now (a batch was just created here)."""
        self._last_claim = -math.inf
        self._wake.set()

    async def stop(self) -> None:
        """Stop claiming, stop the running lines and give them back at once."""
        for task in (self._loop_task, self._renew_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        running = list(self._running)
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        if self._writing is not None:
            await self._writing  # the results of lines that finished are kept
        if running:
            await self._db.run(leases.release_all, worker=self.worker, ids=running)
        metrics.set_batch_lines_running(0)
        await self._db.close()

    # --- the loop ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 (the database may be away for a moment)
                logger.exception("Batch runner: a round failed; trying again")
                await asyncio.sleep(self.poll_seconds)

    async def _tick(self) -> None:
        self._wake.clear()  # before looking: a line ending from here on wakes the wait below
        now = time.monotonic()
        # Batches end (finalized, expired, given up) at the sweep: every poll while work is
        # running out (a batch may be ending), only now and then while claims come back full.
        every = self.poll_seconds if self._short else max(self.poll_seconds, SWEEP_BUSY_SECONDS)
        if now - self._last_sweep >= every:
            self._last_sweep = now
            for status in await self._db.run(leases.sweep, lease_seconds=self.lease_seconds):
                metrics.record_batch_ended(status)
        if now - self._last_cleanup >= FILES_CLEANUP_SECONDS:
            self._last_cleanup = now
            await self._db.run(clean_files)
        self._paused = {b: t for b, t in self._paused.items() if t > now}
        free = self.concurrency - len(self._running)
        # Claimed a few at a time while busy (one statement for several lines); while lines
        # run, more are already waiting for the model's slots, so a freed slot is taken at once.
        # Nothing found: looked for again at the next poll, not at every line's end.
        due = not self._short or now - self._last_claim >= self.poll_seconds
        if (free >= self.claim_at or not self._running) and due:
            self._last_claim = now
            claimed = await self._db.run(
                leases.claim_lines,
                worker=self.worker,
                count=free,
                lease_seconds=self.lease_seconds,
                skip_batches=frozenset(self._paused),
            )
            self._short = len(claimed) < free
            for line in claimed:
                self._running[line.id] = asyncio.create_task(self._run(line))
            metrics.set_batch_lines_running(len(self._running))
        # Until a line ends (then claim again), or the next look for work.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            if self._running:
                try:
                    await self._db.run(
                        leases.renew_leases,
                        worker=self.worker,
                        ids=list(self._running),
                        lease_seconds=self.lease_seconds,
                    )
                except Exception:  # noqa: BLE001
                    logger.exception("Batch runner: renewing leases failed")

    # --- one line ---------------------------------------------------------------------------

    async def _run(self, line: leases.ClaimedLine) -> None:
        try:
            await self._run_line(line)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 (the line is claimed again after its lease)
            logger.exception("Batch runner: line %s of %s failed", line.custom_id, line.batch_id)
        finally:
            self._running.pop(line.id, None)
            metrics.set_batch_lines_running(len(self._running))
            self._wake.set()

    async def _run_line(self, line: leases.ClaimedLine) -> None:
        principal = await self._owner(line.owner)
        if principal is None:
            await self._db.run(
                leases.stop_batch,
                batch_id=line.batch_id,
                ending=Batch.Status.FAILED,
                code="key_inactive",
                message="The API key that created this batch is revoked, expired or deleted.",
            )
            await self._db.run(
                leases.release_line, worker=self.worker, line_id=line.id, count_attempt=False
            )
            return
        request_id = new_request_id()
        request_id_var.set(request_id)
        caller = batch_caller(principal, request_id)
        started = time.monotonic()
        status, body = 200, None
        try:
            body = await self._call(line, caller)
        except QuotaExceeded as exc:
            await self._over_quota(line, exc)
            return
        except ModelBusy as exc:
            self._pause(line.batch_id, exc.retry_after or 1)
            await self._db.run(
                leases.release_line, worker=self.worker, line_id=line.id, count_attempt=False
            )
            metrics.record_batch_line("retried")
            return
        except Exception as exc:  # noqa: BLE001 (becomes the line's error entry)
            status, body = error_body(exc)
            if status in RETRIED_STATUSES and line.attempts < self.max_attempts:
                retry_in = min(60.0, RETRY_BASE_SECONDS * 2**line.attempts)
                await self._db.run(
                    leases.release_line, worker=self.worker, line_id=line.id, retry_in=retry_in
                )
                metrics.record_batch_line("retried")
                return
        result = {
            "id": request_id,
            "custom_id": line.custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": body},
            "error": None,
        }
        kept = await self._finish(line.id, done=status == 200, result=result)
        metrics.record_batch_line(("completed" if status == 200 else "failed") if kept else "lost")
        metrics.record_request(
            model=(body or {}).get("model") if status == 200 else None,
            endpoint=leases_endpoint(line.url),
            status=status,
            duration=time.monotonic() - started,
            team=principal.team_name or None,
            key_id=None if principal.key_id is None else str(principal.key_id),
            operation="embeddings" if line.url == "/v1/embeddings" else "chat",
        )

    async def _call(self, line: leases.ClaimedLine, caller: Any) -> dict[str, Any]:
        """
        The line's call; if interactive work takes its model slot midway (`limits.slots`
        preemption), the call is made again, waiting for a slot like any batch line (not an
        attempt: the line did nothing wrong).
        """
        while True:
            try:
                return await ENDPOINTS[line.url].run(caller, line.body)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                # Cut, and nothing else asked to stop it (the runner's stop, in the same turn
                # of the loop, would be a second request; the first one's message is kept).
                if not is_preemption(exc) or (task is not None and task.cancelling() > 1):
                    raise
                if task is not None and task.cancelling():
                    task.uncancel()
                metrics.record_batch_line("preempted")

    async def _over_quota(self, line: leases.ClaimedLine, exc: QuotaExceeded) -> None:
        if exc.oversized:  # this one line can never fit: its error-file entry
            status, body = error_body(exc)
            result = {
                "id": new_request_id(),
                "custom_id": line.custom_id,
                "response": {"status_code": status, "request_id": "", "body": body},
                "error": None,
            }
            await self._finish(line.id, done=False, result=result)
            metrics.record_batch_line("failed")
            return
        if exc.budget:  # the key's or the team's budget is spent: the batch stops
            await self._db.run(
                leases.stop_batch,
                batch_id=line.batch_id,
                ending=Batch.Status.FAILED,
                code="token_budget_exceeded",
                message=budget_spent(exc),
                scope=exc.scope,
                limit=exc.limit,
            )
        else:  # a rate (tokens per minute): the batch waits for it
            self._pause(line.batch_id, exc.retry_after)
            metrics.record_batch_line("retried")
        await self._db.run(
            leases.release_line, worker=self.worker, line_id=line.id, count_attempt=False
        )

    async def _finish(self, line_id: int, *, done: bool, result: dict[str, Any]) -> bool:
        """
        Write a line's result (False when its lease passed to another process). Results that
        arrive while a write is under way go together in the next one: one commit for many.
        """
        kept: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._results.append((line_id, done, result, kept))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write_results())
        return await kept

    async def _write_results(self) -> None:
        while self._results:
            taken, self._results = self._results, []
            try:
                written = await self._db.run(
                    leases.finish_lines,
                    worker=self.worker,
                    results=[(line_id, done, result) for line_id, done, result, _ in taken],
                )
            except Exception as exc:  # noqa: BLE001 (each line's task reports it)
                for *_, kept in taken:
                    if not kept.done():
                        kept.set_exception(exc)
                continue
            for (*_, kept), ok in zip(taken, written, strict=True):
                if not kept.done():
                    kept.set_result(ok)

    def _pause(self, batch_id: str, seconds: float) -> None:
        self._paused[batch_id] = time.monotonic() + max(1.0, float(seconds))

    async def _owner(self, owner: str) -> Principal | None:
        cached = self._owners.get(owner)
        if cached is not None and time.monotonic() - cached[0] < OWNER_CACHE_SECONDS:
            return cached[1]
        principal = await self._db.run(load_owner_principal, owner)
        self._owners[owner] = (time.monotonic(), principal)
        return principal


def budget_spent(exc: QuotaExceeded) -> str:
    """Why a batch stopped at a budget: whose, which, and when it renews."""
    holder = "team" if exc.scope == "team" else "API key"
    return (
        f"The batch stopped: the {holder}'s budget of {exc.value} "
        f"{exc.limit.replace('_', ' ')} is spent (it renews in {format_reset(exc.retry_after)})."
    )


def leases_endpoint(url: str) -> str:
    """The metrics' endpoint label of a batch line (bounded: one per supported URL)."""
    return "v1/batches" + url.removeprefix("/v1")


class RunnerState:
    """The runtime's batch runner, when this process runs batch lines (BATCHES__RUN)."""

    def __init__(self) -> None:
        self.runner: BatchRunner | None = None


def _state() -> RunnerState:
    return get_runtime().part(RunnerState)


async def start() -> BatchRunner | None:
    """Start this process's runner (at start-up, on the serving event loop)."""
    state = _state()
    config = settings.BATCHES
    if not config["run"] or state.runner is not None:
        return state.runner
    state.runner = BatchRunner(
        concurrency=config["concurrency"],
        lease_seconds=config["lease_seconds"],
        poll_seconds=config["poll_seconds"],
        max_attempts=config["max_attempts"],
    )
    state.runner.start()
    return state.runner


async def stop() -> None:
    state = _state()
    if state.runner is not None:
        runner, state.runner = state.runner, None
        await runner.stop()


def wake() -> None:
    runner = _state().runner
    if runner is not None:
        runner.wake()
