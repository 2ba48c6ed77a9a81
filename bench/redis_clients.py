"""
The shared limits' Redis scripts through two clients (four ways), in one run against one redis-server:

- `pipelined`: the hand-written RESP connection (`limits.redis_connection`, hiredis parsing,
  one connection per event loop shared by every request, commands written as they come);
- `redis-py`: redis-py's asyncio client (with hiredis installed, its parser is hiredis), a
  connection pool of 64, one `EVALSHA` call per script, as an application would use it;
- `redis-py batched`: the same client under the limits' own batching (`limits.redis_client`
  sends every script call made in one loop round as one pipeline): one redis-py pipeline
  (`transaction=False`) per round;
- `redis-py transport`: what `LIMITS__REDIS_CLIENT=redis-py` and Sentinel URLs use
  (`limits.redis_transport.RedisPyTransport`): one redis-py pipeline at a time per event loop,
  carrying every batch submitted while the previous one was on its way.

Each "request" is what a request costs the limits on a contended model's slots: the slot
acquire script (admitted at once) then the release script, with the real sources and
arguments of `limits.redis_slots`. Measured: requests per second and the CPU time of this
process per request at 64 concurrent requests, and the median latency at one.

    .venv/bin/python bench/redis_clients.py            # about 1 minute
    .venv/bin/python bench/redis_clients.py --seconds 2

Results go to `bench/results/redis-clients.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hiredis  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from limits.redis_connection import PipelinedConnection  # noqa: E402
from limits.redis_slots import _ACQUIRE, _RELEASE  # noqa: E402
from limits.redis_transport import RedisPyTransport, redis_py_client  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

RESULTS = ROOT / "bench" / "results"
KEYS = [f"{{bench:slots:m}}:{name}" for name in ("holders", "waiters", "ticket", "flows", "fair")]
KEYS += ["{bench:slots:m}:line:i", "{bench:slots:m}:line:b"]
HEAD = [1000, 10000, 2000, 20000, "bench:slots:wake", 10]
_tokens = itertools.count()


def sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis's script id)


def acquire_args(token: str) -> list[Any]:
    return [*HEAD, token, 1, "bench:slots:busy", "i", f"1000\nteam\nkey{token[-1]}"]


Request = Callable[[], Awaitable[None]]


def pipelined_request(connection: PipelinedConnection) -> Request:
    acquire, release = sha(_ACQUIRE), sha(_RELEASE)

    async def one() -> None:
        token = f"t{next(_tokens)}"
        reply = (await connection.execute([("EVALSHA", acquire, 7, *KEYS, *acquire_args(token))]))[
            0
        ]
        assert reply[0] == 1, reply
        await connection.execute([("EVALSHA", release, 7, *KEYS, *HEAD, token)])

    return one


def transport_request(transport: RedisPyTransport) -> Request:
    acquire, release = sha(_ACQUIRE), sha(_RELEASE)

    async def one() -> None:
        token = f"t{next(_tokens)}"
        reply = (await transport.execute([("EVALSHA", acquire, 7, *KEYS, *acquire_args(token))]))[0]
        assert reply[0] == 1, reply
        await transport.execute([("EVALSHA", release, 7, *KEYS, *HEAD, token)])

    return one


def redis_py_request(client: aioredis.Redis) -> Request:
    acquire, release = sha(_ACQUIRE), sha(_RELEASE)

    async def one() -> None:
        token = f"t{next(_tokens)}"
        reply = await client.evalsha(acquire, 7, *KEYS, *acquire_args(token))
        assert reply[0] == 1, reply
        await client.evalsha(release, 7, *KEYS, *HEAD, token)

    return one


class Batched:
    """Script calls made in one loop round go out as one redis-py pipeline."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []

    def call(self, *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self.queued:
            loop.call_soon(self._flush)
        self.queued.append((args, future))
        return future

    def _flush(self) -> None:
        calls, self.queued = self.queued, []
        asyncio.get_running_loop().create_task(self._send(calls))

    async def _send(self, calls: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for args, _ in calls:
            pipe.evalsha(*args)
        replies = await pipe.execute(raise_on_error=False)
        for (_, future), reply in zip(calls, replies, strict=True):
            future.set_result(reply)


def batched_request(batched: Batched) -> Request:
    acquire, release = sha(_ACQUIRE), sha(_RELEASE)

    async def one() -> None:
        token = f"t{next(_tokens)}"
        reply = await batched.call(acquire, 7, *KEYS, *acquire_args(token))
        assert reply[0] == 1, reply
        await batched.call(release, 7, *KEYS, *HEAD, token)

    return one


async def throughput(request: Request, *, concurrency: int, seconds: float) -> dict[str, float]:
    done = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await request()
            done += 1

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    return {"req_s": done / wall, "cpu_us": cpu / done * 1e6}


async def latency(request: Request, *, count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await request()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


async def measure(args: argparse.Namespace, url: str) -> dict[str, dict[str, float]]:
    loader = redis.Redis.from_url(url)
    for source in (_ACQUIRE, _RELEASE):
        loader.script_load(source)
    connection = PipelinedConnection(url, connect_timeout=1, timeout=2)
    client = aioredis.Redis.from_url(url, max_connections=64)
    transport = RedisPyTransport(
        redis_py_client(url, max_connections=4, connect_timeout=1, timeout=2, retries=0),
        timeout=3,
    )
    clients = {
        "pipelined": pipelined_request(connection),
        "redis-py": redis_py_request(client),
        "redis-py batched": batched_request(Batched(client)),
        "redis-py transport": transport_request(transport),
    }
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in clients}
    p50s: dict[str, list[float]] = {name: [] for name in clients}
    for request in clients.values():  # warm up both
        await throughput(request, concurrency=64, seconds=0.5)
    for _ in range(args.rounds):  # alternate, so that a busy moment hits both alike
        for name, request in clients.items():
            rounds[name].append(await throughput(request, concurrency=64, seconds=args.seconds))
            p50s[name].append(await latency(request, count=300))
    connection.close()
    await client.aclose()
    await transport.aclose()
    return {
        name: {
            "req_s_64": statistics.median(x["req_s"] for x in rounds[name]),
            "cpu_us_64": statistics.median(x["cpu_us"] for x in rounds[name]),
            "p50_ms_1": statistics.median(p50s[name]),
        }
        for name in clients
    }


def render(summary: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    lines = [
        "# The limits' Redis scripts through two clients, four ways",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared), redis-py {redis.__version__}, hiredis "
        f"{hiredis.__version__}; {args.rounds} alternating rounds of {args.seconds} s, medians. "
        "One request = the slot acquire script + the release script. "
        "Produced by `bench/redis_clients.py`.",
        "",
        "| client | req/s at 64 concurrent | CPU per request (this process) | p50 at 1 |",
        "|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['req_s_64']:.0f} | {s['cpu_us_64']:.0f} µs | {s['p50_ms_1']:.3f} ms |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    try:
        summary = asyncio.run(measure(args, server.url))
    finally:
        server.stop()
    text = render(summary, args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "redis-clients.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
