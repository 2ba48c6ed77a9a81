"""
A request's quota check and its model slot in one Redis round trip.

With shared limits (REDIS_URL), reserving the caller's quota and taking a model slot are two
Redis scripts made at two places: the quota around the service call (`api.accounting`), the
slot inside it, once the model (or its fallback) is known. Awaited one after the other they
cost two round trips before the model server is called. Instead, the quota reservation is
started without waiting (`start`), the service takes its slot, and then waits for the quota
(`confirm`) before it calls the model server: both scripts go out in the same pipeline
(`limits.redis_client.run_script`). A refused quota then gives the slot back at once and
raises its `QuotaExceeded` as before.

In-process limits need no round trip and do not use this: their quota is reserved before the
call, as it always was. Neither does a request that takes a reservation made ahead for its
busy key (`limits.redis_ahead`), nor the slot a request of the same worker hands on
(`limits.redis_slots`): those need no round trip at all.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

from limits.per_loop import running_loop

T = TypeVar("T")

_pending: contextvars.ContextVar[asyncio.Future[Any] | None] = contextvars.ContextVar(
    "pending_admission", default=None
)


def start(reservation: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Start `reservation` in the background; `confirm` in this request waits for it."""
    task = running_loop().create_task(reservation)
    _pending.set(task)
    return task


async def confirm() -> None:
    """
    Wait for this request's pending reservation, if any: raises what it raised (a refused
    quota). Shielded: a caller that goes away does not cancel the reservation, which the
    request still settles.
    """
    pending = _pending.get()
    if pending is not None:
        await asyncio.shield(pending)


async def result(pending: asyncio.Future[T]) -> T:
    """The reservation's outcome, once the request no longer needs `confirm`."""
    _pending.set(None)
    return await asyncio.shield(pending)
