"""
Concurrency slots: at most N requests to a model at once, the rest wait their turn (first come,
first served) up to a queue timeout.

`LocalSlots` counts in this process, as documented for `MAX_CONCURRENCY` (per worker). The
interface is what the services use, so a shared implementation can stand in for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator


class SlotTimeout(Exception):
    """No slot became free within the queue timeout."""


class LocalSlots:
    """
    `capacity` slots shared by the requests of this process.

    asyncio's semaphore is fair (FIFO) and wakes waiters in order. It is bound to the event
    loop that first uses it, so there is one per loop (tests run several loops in one process).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._per_loop.get(loop)
        if semaphore is None:
            semaphore = self._per_loop[loop] = asyncio.Semaphore(self.capacity)
        return semaphore

    @property
    def in_use(self) -> int:
        """Slots held right now on this event loop."""
        try:
            semaphore = self._semaphore()
        except RuntimeError:  # no running loop
            return 0
        return self.capacity - semaphore._value  # noqa: SLF001 (no public accessor)

    @contextlib.asynccontextmanager
    async def hold(self, *, queue_timeout: float) -> AsyncIterator[None]:
        """Hold one slot for the block, waiting at most `queue_timeout` seconds for it."""
        semaphore = self._semaphore()
        try:
            if not semaphore.locked():
                await semaphore.acquire()  # a free slot: no timer needed
            elif queue_timeout <= 0:
                raise SlotTimeout
            else:
                async with asyncio.timeout(queue_timeout):
                    await semaphore.acquire()
        except TimeoutError:
            raise SlotTimeout from None
        try:
            yield
        finally:
            semaphore.release()
