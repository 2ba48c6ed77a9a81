"""
Errors of the limits layer.

    LimitsError
     └── LimitsUnavailable   shared limits could not be checked and the policy is to refuse

`SlotTimeout` (no slot freed within the queue timeout) lives beside the slots in `slots.py`.
The API layer maps `LimitsUnavailable` to 503 and `SlotTimeout` to 429 with Retry-After.
"""

from __future__ import annotations


class LimitsError(Exception):
    """Base class of the errors the limits layer raises on purpose."""


class LimitsUnavailable(LimitsError):
    """
    Redis could not be reached to check a shared limit, and `LIMITS__ON_REDIS_ERROR=closed`
    says to refuse rather than admit uncounted. The message is safe to show to clients.
    """

    def __init__(
        self, message: str = "Rate and concurrency limits are unavailable; retry shortly."
    ) -> None:
        super().__init__(message)
