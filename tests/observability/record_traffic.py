"""
A stand-in worker process: records known traffic through the recording API and exits.

    PROMETHEUS_MULTIPROC_DIR=... python -m tests.observability.record_traffic --requests 5 --die-in-flight
"""

from __future__ import annotations

import argparse
import gc
import os

from observability import metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--model", default="mp-model")
    parser.add_argument("--die-in-flight", action="store_true")
    parser.add_argument("--collect-often", action="store_true")
    args = parser.parse_args()
    assert metrics.MULTIPROCESS, "PROMETHEUS_MULTIPROC_DIR must be set before the import"
    metrics.configure(enabled=True, models=[args.model])
    if args.collect_often:  # a cycle collection at nearly every allocation, each one timed
        gc.callbacks.append(metrics.time_collection)
        gc.freeze()  # only what is new is scanned: each collection is short
        gc.set_threshold(1, 1_000_000, 1_000_000)
    for number in range(args.requests):
        metrics.record_request(
            model=args.model,
            # New endpoints make new series: files written under prometheus_client's lock.
            endpoint=f"endpoint-{number}" if args.collect_often else "text-completion",
            status=200,
            duration=0.5,
            ttft=0.1,
            prompt_tokens=10,
            completion_tokens=5,
        )
    metrics.set_ledger_queue_depth(2)
    if args.die_in_flight:
        metrics.in_flight(args.model).__enter__()
        os._exit(0)  # a crash: the block never exits


if __name__ == "__main__":
    main()
