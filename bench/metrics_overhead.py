"""
Per-call cost of the metrics recording API, in this process's memory and in multiprocess mode
(memory-mapped files, as with `serve --workers N`).

    python bench/metrics_overhead.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CALLS = 100_000


def measure() -> dict[str, float]:
    from observability import metrics, timing

    metrics.configure(enabled=True, models=["bench-model"])
    replica = "http://127.0.0.1:8000/v1"

    def request() -> None:
        metrics.record_request(
            model="bench-model",
            endpoint="text-completion",
            status=200,
            duration=0.25,
            team="team-a",
            ttft=0.05,
            upstream_seconds=0.2,
            queue_seconds=0.001,
            prompt_tokens=42,
            completion_tokens=128,
        )

    def in_flight() -> None:
        with metrics.in_flight("bench-model"):
            pass

    def timed_request() -> None:
        request_timing = timing.start()
        with request_timing.span("queue"):
            pass
        request_timing.begin("upstream_ttfb")
        request_timing.end("upstream_ttfb")
        timing.response_headers(request_timing)

    cases = {
        "record_request (all fields)": request,
        "in_flight(model) enter+exit": in_flight,
        "record_queue_wait": lambda: metrics.record_queue_wait("bench-model", 0.01),
        "record_rate_limited": lambda: metrics.record_rate_limited("key_quota", "bench-model", "t"),
        "record_upstream_error": lambda: metrics.record_upstream_error(
            "bench-model", replica, "timeout"
        ),
        "record_retry": lambda: metrics.record_retry("bench-model", replica),
        "record_structured_output": lambda: metrics.record_structured_output(
            "bench-model", "valid"
        ),
        "set_ledger_queue_depth": lambda: metrics.set_ledger_queue_depth(3),
        "record_embedded_tokens_per_second": lambda: metrics.record_embedded_tokens_per_second(
            "bench-model", 30.0
        ),
        "timing: start, 2 phases, both headers": timed_request,
    }
    results = {}
    for name, call in cases.items():
        call()  # warm the label cache
        # CPU time, not wall time: on a shared machine the neighbours' load stays out of it.
        best = min(timeit.repeat(call, number=CALLS, repeat=5, timer=time.process_time))
        results[name] = best / CALLS * 1e6
    metrics.configure(enabled=False)
    results["record_request, recording off"] = (
        min(timeit.repeat(request, number=CALLS, repeat=5, timer=time.process_time)) / CALLS * 1e6
    )
    return results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        for name, micros in measure().items():
            print(f"{name}\t{micros:.2f}")
        return
    print(f"{'call':42} {'in memory':>10} {'multiprocess':>13}   (microseconds per call)")
    runs = []
    for multiprocess in (False, True):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with tempfile.TemporaryDirectory() as directory:
            if multiprocess:
                env["PROMETHEUS_MULTIPROC_DIR"] = directory
            out = subprocess.run(
                [sys.executable, __file__, "--child"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        runs.append(dict(line.split("\t") for line in out.splitlines()))
    for name in runs[0]:
        print(f"{name:42} {float(runs[0][name]):10.2f} {float(runs[1][name]):13.2f}")


if __name__ == "__main__":
    main()
