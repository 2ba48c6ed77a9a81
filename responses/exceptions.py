"""
What the Responses API adds to the errors of /v1 (DRF exceptions: the OpenAI handler shapes them).

    rest_framework.exceptions.NotFound
    └── ResponseNotFound ....... no stored response of that id for this key (or it expired)
"""

from __future__ import annotations

from rest_framework.exceptions import NotFound

from inference.exceptions import quote


class ResponseNotFound(NotFound):
    def __init__(self, response_id: str, *, field: str | None = None) -> None:
        where = f" ({field})" if field else ""
        super().__init__(
            f"No response with id '{quote(response_id, 80)}'{where}: it does not exist, it "
            "expired, or another key made it."
        )
