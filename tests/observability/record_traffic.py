"""
A stand-in worker process: records known traffic through the recording API and exits.

    PROMETHEUS_MULTIPROC_DIR=... python -m tests.observability.record_traffic --requests 5 --die-in-flight
"""

from __future__ import annotations

import argparse
import os

from observability import metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--model", default="mp-model")
    parser.add_argument("--die-in-flight", action="store_true")
    args = parser.parse_args()
    assert metrics.MULTIPROCESS, "PROMETHEUS_MULTIPROC_DIR must be set before the import"
    metrics.configure(enabled=True, models=[args.model])
    for _ in range(args.requests):
        metrics.record_request(
            model=args.model,
            endpoint="text-completion",
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
