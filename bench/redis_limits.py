"""
What the shared limits cost per request, against the in-process ones, and how exact they are.

Starts a throw-away redis-server (Debian's package) on a free port, then measures on one
event loop (uvloop, as the gateway runs):
- latency at one connection, sequential: LocalSlots and RedisSlots hold+release, RedisSlots
  acquire alone (what a request waits before it starts; the release follows the answer), and
  the counters script with 1 and 3 counters (p50, p99, in ms);
- throughput with 64 concurrent tasks (operations per second);
- hand-off: a holder releases, how long until the next waiter runs (pub/sub wake-up);
- accuracy: two processes hammer one key limited to 120 per window for one window
  (`--window`, 60 s by default: a minute), and the admitted total is printed.

    .venv/bin/python bench/redis_limits.py              # full run (about 1.5 minutes)
    .venv/bin/python bench/redis_limits.py --window 5   # shorter accuracy run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmapi.settings")
os.environ.setdefault("ENV_FILE", "/dev/null")

import django  # noqa: E402
import uvloop  # noqa: E402
from redis.utils import HIREDIS_AVAILABLE  # noqa: E402

from tests.redis_server import RedisServer  # noqa: E402


def percentiles(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 4),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1] * 1000, 4),
    }


async def timed(operation, n: int) -> list[float]:  # noqa: ANN001
    for _ in range(min(200, n)):  # warm up: connections, script cache
        await operation()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await operation()
        samples.append(time.perf_counter() - started)
    return samples


async def throughput(operation, tasks: int, seconds: float) -> float:  # noqa: ANN001
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await operation()
            done += 1

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return round(done / seconds)


async def measure(n: int) -> dict:
    from limits import lifespan
    from limits.redis_counters import Counter, reserve
    from limits.redis_slots import RedisSlots
    from limits.slots import LocalSlots

    local = LocalSlots(64)
    shared = RedisSlots("bench", 64)

    async def local_hold() -> None:
        async with local.hold(queue_timeout=10):
            pass

    async def shared_hold() -> None:
        async with shared.hold(queue_timeout=10):
            pass

    acquire_samples: list[float] = []

    async def shared_acquire_only() -> None:
        started = time.perf_counter()
        async with shared.hold(queue_timeout=10):
            acquire_samples.append(time.perf_counter() - started)

    one = [Counter("bench:rpm", limit=10**12, window=60)]
    three = [
        Counter("bench:rpm", limit=10**12, window=60),
        Counter("bench:tpm", limit=10**12, window=60, amount=500),
        Counter("bench:day", limit=10**12, window=86400, amount=500),
    ]

    async def counters_one() -> None:
        await reserve(one)

    async def counters_three() -> None:
        await reserve(three)

    results: dict = {"latency_one_connection": {}, "throughput_64_tasks_ops_per_s": {}}
    latency = results["latency_one_connection"]
    latency["LocalSlots hold+release"] = percentiles(await timed(local_hold, n))
    latency["RedisSlots hold+release"] = percentiles(await timed(shared_hold, n))
    await timed(shared_acquire_only, n)
    latency["RedisSlots acquire (before the request)"] = percentiles(acquire_samples[-n:])
    latency["counters reserve, 1 counter"] = percentiles(await timed(counters_one, n))
    latency["counters reserve, 3 counters"] = percentiles(await timed(counters_three, n))
    rate = results["throughput_64_tasks_ops_per_s"]
    rate["LocalSlots hold+release"] = await throughput(local_hold, 64, 3)
    rate["RedisSlots hold+release"] = await throughput(shared_hold, 64, 3)
    rate["counters reserve, 3 counters"] = await throughput(counters_three, 64, 3)

    # Hand-off: capacity 1, a waiter in line; time from release to the waiter running.
    handoff = RedisSlots("bench-handoff", 1)
    local_handoff = LocalSlots(1)
    for label, slots in (("RedisSlots", handoff), ("LocalSlots", local_handoff)):
        gaps = []
        for _ in range(50):
            admitted = asyncio.Event()
            admitted_at = 0.0

            async def waiter(slots=slots, admitted=admitted) -> None:  # noqa: ANN001
                nonlocal admitted_at
                async with slots.hold(queue_timeout=10):
                    admitted_at = time.perf_counter()
                    admitted.set()

            async with slots.hold(queue_timeout=10):
                task = asyncio.create_task(waiter())
                await asyncio.sleep(0.05)  # in line, past its first polls
                released_at = time.perf_counter()
            await admitted.wait()
            await task
            gaps.append(admitted_at - released_at)
        results[f"hand-off to the next waiter, {label}"] = percentiles(gaps)
    await lifespan.stop()
    return results


def accuracy(redis_url: str, window: float) -> dict:
    import subprocess

    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "LIMITS__REDIS_KEY_PREFIX": "test",
        "LIMITS__ON_REDIS_ERROR": "closed",
    }
    command = [sys.executable, "-m", "tests.limits.redis_worker", "counter", "120", str(window)]
    processes = [
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for process in processes:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline()) == {"ready": True}
    start = time.time() + 0.2
    outputs = [
        json.loads(process.communicate(f"{start} {start + window}\n", timeout=window + 60)[0])
        for process in processes
    ]
    return {
        "limit": 120,
        "window_s": window,
        "admitted": sum(o["admitted"] for o in outputs),
        "refused": sum(o["refused"] for o in outputs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=60.0, help="accuracy window, seconds")
    parser.add_argument("-n", type=int, default=5000, help="sequential samples per measurement")
    args = parser.parse_args()

    server = RedisServer()
    server.start()
    os.environ["REDIS_URL"] = server.url
    django.setup()
    try:
        results = {"hiredis": HIREDIS_AVAILABLE, **uvloop.run(measure(args.n))}
        server.command("FLUSHALL")
        results["accuracy_two_processes"] = accuracy(server.url, args.window)
    finally:
        server.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
