"""
A request's quota check and its model slot in one Redis round trip.

With shared limits (REDIS_URL), reserving the caller's quota and taking a model slot are two
Redis scripts: the quota in the accounted path (`gateway.calls`), the slot in the inference
core, once the model (or its fallback) is known. Awaited one after the other they cost two
round trips before the model server is called. Instead the accounted path starts the
reservation without waiting (`PendingReservation`), and hands its `confirm` to the core as
`CallContext.admitted`: the core takes its slot, then awaits `confirm` before it calls the
model server. Both scripts go out in the same pipeline (`limits.redis_client.run_script`). A
refused quota then gives the slot back at once and raises its `QuotaExceeded`.

In-process limits need no round trip and do not use this: their quota is reserved before the
call. Neither does a request that takes a reservation made ahead for its busy key
(`limits.redis_ahead`), nor the slot a request of the same worker hands on
(`limits.redis_slots`): those need no round trip at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

from limits.per_loop import running_loop

T = TypeVar("T")


class PendingReservation(Generic[T]):
    """A reservation started in the background, awaited by whoever needs its verdict."""

    __slots__ = ("_task",)

    def __init__(self, reservation: Coroutine[Any, Any, T]) -> None:
        self._task: asyncio.Future[T] = running_loop().create_task(reservation)

    async def confirm(self) -> None:
        """
        Wait for the reservation: raises what it raised (a refused quota). Shielded: a caller
        that goes away does not cancel the reservation, which the request still settles.
        """
        await asyncio.shield(self._task)

    async def result(self) -> T:
        """The reservation's outcome."""
        return await asyncio.shield(self._task)
