"""
JSON request bodies, parsed with orjson and refused when nested too deeply.

DRF's JSONParser uses the standard library, whose decoder recurses: a body like `[[[[...]]]]`
1,000 levels deep raised RecursionError (a 500). orjson never recurses past 1,024 levels (it
fails cleanly) and parses several times faster; below that, SERVER__MAX_JSON_DEPTH (64) keeps
what reaches serializers, schema checks and `orjson.dumps` (which stops at 254 levels) shallow.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from infra.json_depth import json_depth

# No imports from completions here: DRF imports this module while it builds APIView.


def loads_bounded(raw: bytes | str) -> Any:
    """Parse JSON text; `ValueError` with a short message when it is invalid or too deep."""
    limit = settings.SERVER_MAX_JSON_DEPTH
    too_deep = ValueError(
        f"JSON nested more than {limit} levels deep is not accepted (SERVER__MAX_JSON_DEPTH)."
    )
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own limit, 1,024 levels
            raise too_deep from None
        raise ValueError(f"JSON parse error - {exc}") from None  # orjson quotes no input
    if json_depth(value, limit) > limit:
        raise too_deep
    return value


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with orjson and a nesting limit (400, never a RecursionError)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return loads_bounded(stream.read())
        except ValueError as exc:
            raise ParseError(str(exc)) from None
