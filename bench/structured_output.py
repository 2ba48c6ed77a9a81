"""
The cost of checking answers against client JSON Schemas, normal and hostile, in-process:
inspect_schema on arrival, check_output on answers, and what the budget stops.

    .venv/bin/python bench/structured_output.py
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmapi.settings")
os.environ.setdefault("ENV_FILE", "/dev/null")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from inference import structured  # noqa: E402
from inference.exceptions import OutputCheckTooCostly  # noqa: E402
from tests.inference.test_structured import (  # noqa: E402
    COSTLY_ANSWER,
    COSTLY_SCHEMA,
    REVIEW_FORMAT,
    REVIEW_SCHEMA,
    VALID,
)


def timed(function, repeat: int = 1) -> float:
    """Median seconds of `repeat` calls."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def fmt(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "b", "schema": schema}}


def main() -> None:
    results = {}
    results["inspect_schema(review) ms"] = (
        timed(lambda: structured.inspect_schema(REVIEW_SCHEMA), 200) * 1000
    )
    big = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "maxLength": i} for i in range(1500)},
    }
    results[f"inspect_schema(1500 properties, {len(json.dumps(big))} bytes) ms"] = (
        timed(lambda: structured.inspect_schema(big), 5) * 1000
    )
    results["check_output(review) ms"] = (
        timed(lambda: structured.check_output(VALID, REVIEW_FORMAT), 500) * 1000
    )
    redos = fmt({"type": "object", "properties": {"a": {"pattern": "^(a+)+$"}}})
    evil = json.dumps({"a": "a" * 30 + "!"})
    results["check_output(^(a+)+$ vs 30 a's and !) ms"] = (
        timed(lambda: structured.check_output(evil, redos), 20) * 1000
    )
    unique = fmt({"type": "object", "properties": {"a": {"uniqueItems": True}}})
    for count in (6000, 25_000):
        answer = json.dumps({"a": [{"k": i, "v": [i, str(i)]} for i in range(count)]})
        results[f"check_output(uniqueItems, {count} objects) ms"] = (
            timed(lambda answer=answer: structured.check_output(answer, unique), 3) * 1000
        )
    # The costliest accepted schema, unbounded (no deadline), then stopped by the budget.
    costly = fmt(COSTLY_SCHEMA)
    for items in (10, 100):
        answer = json.dumps({"a": [1] * items})
        results[f"check_output(costliest schema, {items} items) s"] = timed(
            lambda answer=answer: structured.check_output(answer, costly)
        )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        structured._check_within(
            settings.STRUCTURED_OUTPUT["validation_seconds"], COSTLY_ANSWER, costly
        )
    except OutputCheckTooCostly:
        pass
    results[f"costliest schema, {len(COSTLY_ANSWER)} byte answer: stopped after s"] = (
        time.perf_counter() - started
    )
    results["peak RSS growth during it, MiB"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    ) / 1024
    for name, value in results.items():
        print(f"{name:70} {value:10.3f}")


if __name__ == "__main__":
    main()
