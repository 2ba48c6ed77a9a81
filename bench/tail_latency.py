"""
What makes the one-connection tail: each slow request of a sequential run, and what the
gateway was doing then.

One gateway as `bench/run.py` runs it (a database key with quotas, the ledger, metrics) in
front of nginx, driven by one connection at a time for `--seconds`. For every request the
client keeps its latency and the gateway's `Server-Timing` phases; the gateway's own
`llmapi_gc_pause_seconds` histogram says how often and how long the cycle collector stopped it.
Requests slower than five times the median are the tail: the report says how many there were,
how much of their time the gateway's phases explain, and how the collector's pauses compare.
With `--gc` several collector settings (`SERVER__GC_THRESHOLDS`) are measured in the same run.

    .venv/bin/python bench/tail_latency.py --seconds 20 --gc 50000,20,20 700,10,10
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import MODEL, QUESTION, start_gateway, start_nginx  # noqa: E402

PAUSE = re.compile(r'^llmapi_gc_pause_seconds_(sum|count)\{generation="(\d)"\} (\S+)', re.M)


def gc_pauses(port: int) -> dict[str, float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer bench-metrics"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    found: dict[str, float] = {}
    for kind, generation, value in PAUSE.findall(text):
        found[f"gen{generation}_{kind}"] = float(value)
    return found


def run(seconds: float, thresholds: str, workdir: Path, nginx_url: str) -> dict:
    env = {"SERVER__GC_THRESHOLDS": thresholds}
    gateway = start_gateway(nginx_url, open(workdir / f"gw-{thresholds}.log", "wb"), workdir, env)  # noqa: SIM115
    try:
        url = f"http://127.0.0.1:{gateway.port}/text_model/chat/completion"
        latencies: list[float] = []
        explained: list[float] = []
        with httpx.Client(headers={"X-API-Key": gateway.key}, timeout=30) as client:
            for _ in range(200):  # warm up
                client.post(url, json=QUESTION)
            before = gc_pauses(gateway.port)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = client.post(url, json={**QUESTION, "model": MODEL})
                latencies.append((time.perf_counter() - started) * 1000)
                phases = re.findall(r"dur=([\d.]+)", response.headers.get("Server-Timing", ""))
                explained.append(max((float(p) for p in phases), default=0.0))
            after = gc_pauses(gateway.port)
    finally:
        gateway.stop()
    latencies_sorted = sorted(latencies)
    p50 = statistics.median(latencies)
    p99 = latencies_sorted[int(len(latencies) * 0.99)]
    tail = [i for i, value in enumerate(latencies) if value > 5 * p50]
    pauses = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in set(after) | set(before)}
    return {
        "thresholds": thresholds,
        "requests": len(latencies),
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": latencies_sorted[-1],
        "tail": len(tail),
        # Of the tail's time, the share the gateway's own phases (total) account for.
        "tail_explained": sum(explained[i] for i in tail)
        / max(1e-9, sum(latencies[i] for i in tail)),
        "collections": {g: int(pauses.get(f"gen{g}_count", 0)) for g in "012"},
        "collector_ms": {g: round(pauses.get(f"gen{g}_sum", 0.0) * 1000, 1) for g in "012"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--gc", nargs="+", default=["50000,20,20"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        nginx = start_nginx(workdir, open(workdir / "nginx.log", "wb"))  # noqa: SIM115
        try:
            for thresholds in args.gc:
                result = run(args.seconds, thresholds, workdir, f"http://127.0.0.1:{nginx.port}")
                print(result, flush=True)
        finally:
            nginx.stop()


if __name__ == "__main__":
    main()
