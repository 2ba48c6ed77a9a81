"""
Scale-out: two gateway processes sharing one Redis behave as one gateway. One run measures:

1. Concurrency. Two gateways with `REDIS_URL` and `TEXT_MODEL__MAX_CONCURRENCY=4` in front of
   a slow fake model server; 64 clients, half to each gateway. The model server must never be
   answering more than 4 requests at once (sampled every millisecond or so, and counted exactly
   by the model server at each arrival). The same without `REDIS_URL`, for comparison (8).
2. Rate. Both gateways share one database and a key limited to 120 requests per minute. From
   just after a UTC minute boundary (on the Redis clock) to just before the next, 16 clients
   hammer both gateways: 118..122 of their requests may get 200, the rest 429.
3. Cost. `bench/run.py`'s method (nginx as the model server and wrk on core 1, one gateway
   worker alone on core 0, a database key with quotas, the ledger and metrics on): the gateway
   without Redis against the same gateway with `REDIS_URL` (redis-server on core 1), in
   alternating rounds. req/s at 64 connections, p50 at one connection, and the gateway's CPU
   time per request from /proc (less noisy than wall time on a shared machine). Each round
   measures both back to back at each load; the goals read the median over rounds of each
   round's ratio (req/s) and difference (p50).
4. Faults, for `LIMITS__ON_REDIS_ERROR=open` and `closed`: steady load on two gateways while
   redis-server is killed (SIGKILL) and, 5 s later, started again on the same port. Statuses
   before, during and after the outage, the slowest request overlapping the outage, the peak at
   the model server once Redis is back, and what `/readyz` says.

Every phase starts what it needs (throw-away redis-server, fake model server, gateways on free
ports, temporary directories) and stops it afterwards. Results go to
`bench/results/scale-out.json` and `bench/results/scale-out.md`; the exit status is 1 when a
goal is missed (the summary says which).

    .venv/bin/python bench/scale_out.py           # the full run, about 8 minutes
    .venv/bin/python bench/scale_out.py --quick   # shorter phases (the rate phase still waits
                                                  # for a minute boundary and lasts a minute)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    LOAD_CORE,
    Service,
    Target,
    _cpu_model,
    create_api_key,
    free_port,
    gateway_target,
    start_gateway,
    start_nginx,
    wrk,
)
from tests.fake_upstream import FakeUpstream, wait_for_http  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
CAPACITY = 4
PEPPER = "scale-out-pepper"
BOOTSTRAP_KEY = "scale-out-bootstrap-key"
QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
RATE_LIMIT = 120  # requests per minute of the rate phase's key
BOTH_CORES = "0,1"


# --- the pieces ------------------------------------------------------------------------------


class CountingUpstream(FakeUpstream):
    """
    The fake model server, which also counts the chat completions it is answering (`in_flight`)
    and notes that count at each arrival (exact, on its own event loop, unlike sampling from
    another thread). `FakeUpstream.active` would also count the readiness probes that
    `/readyz` sends to the model server, which take no concurrency slot.
    """

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.arrivals: list[tuple[float, int]] = []  # (monotonic time, in flight incl. this one)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await super().__call__(scope, receive, send)
            return
        self.in_flight += 1
        self.arrivals.append((time.monotonic(), self.in_flight))
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.in_flight -= 1

    def exact_peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((n for t, n in self.arrivals if start <= t < end), default=0)


class Sampler:
    """Samples the model server's in-flight chat completions every `interval` s, in a thread."""

    def __init__(self, upstream: CountingUpstream, interval: float = 0.001) -> None:
        self.upstream, self.interval = upstream, interval
        self.samples: list[tuple[float, int]] = []
        self._running = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self._running:
            self.samples.append((time.monotonic(), self.upstream.in_flight))
            time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._running = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join()

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((n for t, n in self.samples if start <= t < end), default=0)

    def mean_interval_ms(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        span = self.samples[-1][0] - self.samples[0][0]
        return round(1000 * span / (len(self.samples) - 1), 2)


@dataclass
class Answer:
    start: float  # monotonic
    end: float
    status: str  # "200", "429", ... or "error:<exception name>"
    gateway: int

    @property
    def latency(self) -> float:
        return self.end - self.start


class Gateways:
    """Gateway processes (`manage.py serve`, one worker each) with a shared environment."""

    def __init__(self, workdir: Path, env: dict[str, str], count: int = 2) -> None:
        self.services: list[Service] = []
        self.log = (workdir / "gateways.log").open("ab")
        try:
            for _ in range(count):
                port = free_port()
                service_env = {
                    **env,
                    "SERVER__PID_FILE": str(workdir / f"gateway-{port}.pid"),
                }
                argv = [PYTHON, "manage.py", "serve", "--port", str(port), "--workers", "1"]
                service = Service(
                    "llmapi", argv, core=BOTH_CORES, port=port, env=service_env, log=self.log
                )
                self.services.append(service)
                wait_for_http(f"http://127.0.0.1:{port}/healthz", process=service.process)
        except BaseException:
            self.stop()
            raise

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{s.port}" for s in self.services]

    def stop(self) -> None:
        for service in self.services:
            service.stop()
        self.log.close()


def gateway_env(upstream: str, workdir: Path, **settings: str) -> dict[str, str]:
    env = {
        "ENV_FILE": "/dev/null",
        "API_KEY": BOOTSTRAP_KEY,
        "TEXT_MODEL__BASE_URL": upstream,
        "TEXT_MODEL__MODEL_NAME": "fake-llm",
        "TEXT_MODEL__MAX_CONCURRENCY": str(CAPACITY),
        "TEXT_MODEL__QUEUE_TIMEOUT": "60",
        "LOG_LEVEL": "WARNING",
        "DATABASE__SQLITE_PATH": str(workdir / "llmapi.sqlite3"),
        "API_KEYS__PEPPER": PEPPER,
        "API_KEYS__PEPPER_FILE": str(workdir / "pepper"),
    }
    env.update(settings)
    return env


async def load(
    urls: list[str],
    *,
    clients: int,
    until: float,
    key: str = BOOTSTRAP_KEY,
    not_before: float = 0.0,
) -> list[Answer]:
    """`clients` loops, client i on gateway i % len(urls), each sending the next request as soon
    as the previous one is answered, from `not_before` until `until` (monotonic times)."""
    answers: list[Answer] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"X-API-Key": key}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(index: int) -> None:
            gateway = index % len(urls)
            url = f"{urls[gateway]}/text_model/chat/completion"
            delay = not_before - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while (start := time.monotonic()) < until:
                try:
                    async with session.post(url, json=QUESTION, headers=headers) as response:
                        await response.read()
                        status = str(response.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status = f"error:{type(exc).__name__}"
                answers.append(Answer(start, time.monotonic(), status, gateway))

        await asyncio.gather(*(client(i) for i in range(clients)))
    return answers


def statuses(answers: list[Answer]) -> dict[str, int]:
    return dict(sorted(Counter(a.status for a in answers).items()))


def goal(goals: list[dict], text: str, value: str, met: bool) -> None:
    goals.append({"goal": text, "value": value, "met": bool(met)})


def say(text: str) -> None:
    print(text, flush=True)


# --- 1. concurrency --------------------------------------------------------------------------


def concurrency_phase(
    workdir: Path, *, shared: bool, duration: float, clients: int = 64, delay: float = 0.05
) -> dict:
    redis = RedisServer() if shared else None
    upstream = CountingUpstream()
    gateways = None
    try:
        if redis is not None:
            redis.start()
        upstream.start()
        upstream.behave(delay=delay)
        env = gateway_env(upstream.url, workdir, REDIS_URL=redis.url if redis else "")
        gateways = Gateways(workdir, env)
        asyncio.run(load(gateways.urls, clients=2, until=time.monotonic() + 0.5))  # warm-up
        upstream.arrivals.clear()
        with Sampler(upstream) as sampler:
            started = time.monotonic()
            answers = asyncio.run(load(gateways.urls, clients=clients, until=started + duration))
            elapsed = time.monotonic() - started
        return {
            "redis": shared,
            "clients": clients,
            "upstream_delay_s": delay,
            "max_concurrency": CAPACITY,
            "duration_s": round(elapsed, 1),
            "answered": len(answers),
            "per_gateway": [sum(a.gateway == g for a in answers) for g in range(2)],
            "statuses": statuses(answers),
            "peak_sampled": sampler.peak(),
            "peak_exact": upstream.exact_peak(),
            "samples": len(sampler.samples),
            "sample_interval_ms": sampler.mean_interval_ms(),
            "max_latency_s": round(max((a.latency for a in answers), default=0), 2),
        }
    finally:
        if gateways is not None:
            gateways.stop()
        upstream.stop()
        if redis is not None:
            redis.stop()


# --- 2. rate ---------------------------------------------------------------------------------


def redis_clock_offset(redis: RedisServer) -> float:
    """Redis's TIME minus this process's time.time(), in seconds."""
    before = time.time()
    reply = redis.command("TIME").decode()
    after = time.time()
    seconds, micros = re.findall(r"\$\d+\r\n(\d+)\r\n", reply)
    return int(seconds) + int(micros) / 1e6 - (before + after) / 2


def rate_phase(workdir: Path, *, clients: int = 16, margin: float = 0.3) -> dict:
    redis = RedisServer()
    upstream = FakeUpstream()
    gateways = None
    try:
        redis.start()
        upstream.start()
        env = gateway_env(
            upstream.url, workdir, REDIS_URL=redis.url, TEXT_MODEL__MAX_CONCURRENCY="64"
        )
        key = create_api_key(env, "--name", "rate", "--requests-per-minute", str(RATE_LIMIT))
        gateways = Gateways(workdir, env)
        # Warm-up (key lookups, connections), in the minute before the measured one.
        asyncio.run(load(gateways.urls, clients=2, until=time.monotonic() + 0.2, key=key))
        offset = redis_clock_offset(redis)
        redis_now = time.time() + offset
        boundary = (int(redis_now) // 60 + 1) * 60  # the next minute, on the Redis clock
        to_monotonic = time.monotonic() - redis_now  # Redis time -> monotonic time
        start, end = boundary + margin + to_monotonic, boundary + 60 - margin + to_monotonic
        say(f"   waiting {start - time.monotonic():.1f} s for the next minute boundary")
        answers = asyncio.run(
            load(gateways.urls, clients=clients, until=end, key=key, not_before=start)
        )
        first, last = min(a.start for a in answers), max(a.end for a in answers)
        window = dt.datetime.fromtimestamp(boundary, dt.UTC).strftime("%H:%M")
        counts = statuses(answers)
        return {
            "limit_per_minute": RATE_LIMIT,
            "clients": clients,
            "minute_utc": window,
            "redis_clock_offset_ms": round(offset * 1000, 2),
            "hammer_s": round(last - first, 2),
            "hammer_from_boundary_s": round(first - (boundary + to_monotonic), 3),
            "hammer_until_boundary_s": round(boundary + 60 + to_monotonic - last, 3),
            "answered": len(answers),
            "ok": counts.get("200", 0),
            "refused_429": counts.get("429", 0),
            "statuses": counts,
            "ok_per_gateway": [
                sum(a.gateway == g and a.status == "200" for a in answers) for g in range(2)
            ],
        }
    finally:
        if gateways is not None:
            gateways.stop()
        upstream.stop()
        redis.stop()


# --- 3. cost ---------------------------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its direct children, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def measure(
    target: Target, gateway_pid: int, redis_pid: int | None, connections: int, duration: int
) -> dict:
    """wrk at `connections`, with the CPU time spent meanwhile."""
    cpu_before = tree_cpu_seconds(gateway_pid)
    redis_before = tree_cpu_seconds(redis_pid) if redis_pid else 0.0
    run = wrk(target, connections=connections, duration=duration)
    requests = max(run["requests"], 1)
    run["gateway_cpu_ms_per_req"] = round(
        (tree_cpu_seconds(gateway_pid) - cpu_before) * 1000 / requests, 3
    )
    if redis_pid:
        run["redis_cpu_ms_per_req"] = round(
            (tree_cpu_seconds(redis_pid) - redis_before) * 1000 / requests, 3
        )
    return run


def cost_phase(workdir: Path, *, rounds: int, duration: int) -> dict:
    log = (workdir / "services.log").open("ab")
    services: list[Service] = []
    redis = RedisServer()
    try:
        nginx = start_nginx(workdir, log)
        services.append(nginx)
        redis.start()
        assert redis.process is not None
        subprocess.run(
            ["taskset", "-p", "-c", LOAD_CORE, str(redis.process.pid)],
            check=True,
            capture_output=True,
        )
        nginx_url = f"http://127.0.0.1:{nginx.port}"
        # Both gateways stay up (one idle while the other is measured) so that the rounds
        # can alternate without restarts.
        local = start_gateway(nginx_url, log, workdir / "local")
        services.append(local)
        shared = start_gateway(nginx_url, log, workdir / "redis", {"REDIS_URL": redis.url})
        services.append(shared)
        peers = {
            "local": (gateway_target(local), local.pid, None),
            "redis": (gateway_target(shared), shared.pid, redis.process.pid),
        }
        for target, _, _ in peers.values():
            wrk(target, connections=8, duration=2)  # warm-up
        rows: list[dict] = []
        for index in range(rounds):
            # The two setups of a round are measured right after each other at each load (the
            # machine's speed drifts within seconds); which goes first alternates.
            order = ["local", "redis"] if index % 2 == 0 else ["redis", "local"]
            row: dict[str, Any] = {"round": index + 1, "local": {}, "redis": {}}
            for label, connections in (("one", 1), ("sixty_four", 64)):
                for name in order:
                    target, pid, redis_pid = peers[name]
                    row[name][label] = measure(target, pid, redis_pid, connections, duration)
            rows.append(row)
            say(
                f"   round {index + 1}: req/s at 64 local {row['local']['sixty_four']['rps']:.0f}"
                f" redis {row['redis']['sixty_four']['rps']:.0f}; p50 at 1 local "
                f"{row['local']['one']['p50_ms']:.2f} ms redis {row['redis']['one']['p50_ms']:.2f}"
                f" ms; CPU/request at 64 local "
                f"{row['local']['sixty_four']['gateway_cpu_ms_per_req']:.3f} ms redis "
                f"{row['redis']['sixty_four']['gateway_cpu_ms_per_req']:.3f} ms"
            )

        def median(name: str, phase: str, field: str) -> float:
            return round(statistics.median(r[name][phase][field] for r in rows), 3)

        summary = {
            name: {
                "rps_64": median(name, "sixty_four", "rps"),
                "p50_1_ms": median(name, "one", "p50_ms"),
                "p99_1_ms": median(name, "one", "p99_ms"),
                "cpu_ms_per_req_1": median(name, "one", "gateway_cpu_ms_per_req"),
                "cpu_ms_per_req_64": median(name, "sixty_four", "gateway_cpu_ms_per_req"),
                "non_2xx": sum(
                    r[name][p]["non_2xx"] + r[name][p]["socket_errors"]
                    for r in rows
                    for p in ("one", "sixty_four")
                ),
            }
            for name in ("local", "redis")
        }
        summary["redis"]["redis_server_cpu_ms_per_req_64"] = median(
            "redis", "sixty_four", "redis_cpu_ms_per_req"
        )
        # Each round measures both setups back to back: their ratio and difference within a
        # round are what the goals read (the median over rounds), since the machine's speed
        # drifts between rounds more than the limiter costs.
        summary["per_round_rps_ratio"] = [
            round(r["redis"]["sixty_four"]["rps"] / r["local"]["sixty_four"]["rps"], 3)
            for r in rows
        ]
        summary["per_round_p50_added_ms"] = [
            round(r["redis"]["one"]["p50_ms"] - r["local"]["one"]["p50_ms"], 3) for r in rows
        ]
        summary["rps_ratio"] = round(statistics.median(summary["per_round_rps_ratio"]), 3)
        summary["p50_added_ms"] = round(statistics.median(summary["per_round_p50_added_ms"]), 3)
        for phase, label in (("one", "1"), ("sixty_four", "64")):
            summary[f"cpu_added_ms_per_req_{label}"] = round(
                statistics.median(
                    r["redis"][phase]["gateway_cpu_ms_per_req"]
                    - r["local"][phase]["gateway_cpu_ms_per_req"]
                    for r in rows
                ),
                3,
            )
        return {"duration_s": duration, "rounds": rows, "summary": summary}
    finally:
        for service in reversed(services):
            service.stop()
        redis.stop()
        log.close()


# --- 4. faults -------------------------------------------------------------------------------


async def get_json(url: str) -> dict:
    started = time.monotonic()
    try:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url) as response:
                body = await response.json(content_type=None)
                return {
                    "status": response.status,
                    "limits": body.get("limits"),
                    "ready": body.get("ready"),
                    "took_ms": round(1000 * (time.monotonic() - started), 1),
                }
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return {"status": f"error:{type(exc).__name__}"}


def fault_phase(
    workdir: Path,
    *,
    mode: str,
    before: float,
    outage: float,
    after: float,
    clients: int = 16,
    delay: float = 0.1,
    settle: float = 2.0,
) -> dict:
    redis = RedisServer()
    upstream = CountingUpstream()
    gateways = None
    try:
        redis.start()
        upstream.start()
        upstream.behave(delay=delay)
        env = gateway_env(upstream.url, workdir, REDIS_URL=redis.url, LIMITS__ON_REDIS_ERROR=mode)
        gateways = Gateways(workdir, env)
        urls = gateways.urls
        asyncio.run(load(urls, clients=2, until=time.monotonic() + 0.5))  # warm-up
        upstream.arrivals.clear()
        events: dict[str, float] = {}
        readyz: dict[str, Any] = {}

        async def scenario() -> list[Answer]:
            events["start"] = time.monotonic()
            end = events["start"] + before + outage + after
            running = asyncio.create_task(load(urls, clients=clients, until=end))
            await asyncio.sleep(before)
            readyz["before"] = await get_json(f"{urls[0]}/readyz")
            await asyncio.to_thread(redis.kill)
            events["kill"] = time.monotonic()
            await asyncio.sleep(min(2.5, outage / 2))
            readyz["during_outage"] = await get_json(f"{urls[0]}/readyz")
            await asyncio.sleep(events["kill"] + outage - time.monotonic())
            await asyncio.to_thread(redis.start)
            events["restart"] = time.monotonic()
            await asyncio.sleep(settle + 1)
            readyz["after_restart"] = await get_json(f"{urls[0]}/readyz")
            readyz["after_restart"]["seconds_after_restart"] = round(
                time.monotonic() - events["restart"], 1
            )
            return await running

        with Sampler(upstream) as sampler:
            answers = asyncio.run(scenario())
        kill, restart = events["kill"], events["restart"]
        periods = {
            "before": [a for a in answers if a.start < kill],
            "outage": [a for a in answers if kill <= a.start < restart],
            "after": [a for a in answers if a.start >= restart],
        }
        settled = [a for a in answers if a.start >= restart + settle]
        # Every request that was waiting or running at some moment of the outage.
        overlapping = [a for a in answers if a.end >= kill and a.start < restart]
        return {
            "mode": mode,
            "clients": clients,
            "upstream_delay_s": delay,
            "periods_s": {"before": before, "outage": round(restart - kill, 2), "after": after},
            "statuses": {name: statuses(group) for name, group in periods.items()},
            "statuses_after_settled": statuses(settled),
            "settle_s": settle,
            "max_latency_s": {
                name: round(max((a.latency for a in group), default=0), 3)
                for name, group in periods.items()
            },
            "max_latency_overlapping_outage_s": round(
                max((a.latency for a in overlapping), default=0), 3
            ),
            "peak_in_flight": {
                "before": max(sampler.peak(0, kill), upstream.exact_peak(0, kill)),
                "outage": max(sampler.peak(kill, restart), upstream.exact_peak(kill, restart)),
                "after": max(sampler.peak(restart), upstream.exact_peak(restart)),
                "after_settled": max(
                    sampler.peak(restart + settle), upstream.exact_peak(restart + settle)
                ),
            },
            "readyz": readyz,
        }
    finally:
        if gateways is not None:
            gateways.stop()
        upstream.stop()
        redis.stop()


# --- the run ---------------------------------------------------------------------------------


def evaluate(phases: dict) -> list[dict]:
    goals: list[dict] = []
    shared = phases.get("concurrency", {}).get("shared")
    if shared:
        peak = max(shared["peak_sampled"], shared["peak_exact"])
        goal(
            goals,
            f"concurrency: peak at the model server <= {CAPACITY} (two gateways, shared)",
            f"{peak} (sampled {shared['peak_sampled']}, exact {shared['peak_exact']})",
            peak <= CAPACITY,
        )
        others = {s: n for s, n in shared["statuses"].items() if s != "200"}
        goal(
            goals,
            "concurrency: every request answered 200",
            f"{shared['statuses']}",
            not others and shared["answered"] > 0,
        )
    rate = phases.get("rate")
    if rate:
        goal(
            goals,
            f"rate: 200s in one minute within {RATE_LIMIT - 2}..{RATE_LIMIT + 2} (limit {RATE_LIMIT}/min)",
            f"{rate['ok']} (429: {rate['refused_429']})",
            RATE_LIMIT - 2 <= rate["ok"] <= RATE_LIMIT + 2,
        )
        others = {s: n for s, n in rate["statuses"].items() if s not in ("200", "429")}
        goal(goals, "rate: only 200 and 429", str(others or "none other"), not others)
    cost = phases.get("cost", {}).get("summary")
    if cost:
        goal(
            goals,
            "cost: req/s at 64 connections with Redis >= 90% of without",
            f"{100 * cost['rps_ratio']:.0f}% (median of {len(cost['per_round_rps_ratio'])} "
            f"paired rounds; medians {cost['redis']['rps_64']:.0f} vs "
            f"{cost['local']['rps_64']:.0f})",
            cost["rps_ratio"] >= 0.9,
        )
        goal(
            goals,
            "cost: p50 at 1 connection, Redis adds <= 0.3 ms",
            f"{cost['p50_added_ms']:+.2f} ms (median of "
            f"{len(cost['per_round_p50_added_ms'])} paired rounds; medians "
            f"{cost['redis']['p50_1_ms']:.2f} vs {cost['local']['p50_1_ms']:.2f} ms)",
            cost["p50_added_ms"] <= 0.3,
        )
        errors = cost["local"]["non_2xx"] + cost["redis"]["non_2xx"]
        goal(goals, "cost: no non-2xx or socket errors", str(errors), errors == 0)
    for mode in ("open", "closed"):
        fault = phases.get("faults", {}).get(mode)
        if not fault:
            continue
        every = Counter()
        for group in fault["statuses"].values():
            every.update(group)
        bad = {s: n for s, n in every.items() if s == "500" or s.startswith("error")}
        goal(goals, f"faults ({mode}): no 500s, no client errors", str(bad or "none"), not bad)
        outage = fault["statuses"]["outage"]
        expected = "200" if mode == "open" else "503"
        goal(
            goals,
            f"faults ({mode}): during the outage every request gets {expected}",
            str(outage),
            bool(outage) and set(outage) == {expected},
        )
        limit = fault["upstream_delay_s"] + 2.0
        latency = fault["max_latency_overlapping_outage_s"]
        goal(
            goals,
            f"faults ({mode}): no request overlapping the outage takes over {limit:.1f} s",
            f"{latency:.2f} s",
            latency <= limit,
        )
        settled = fault["statuses_after_settled"]
        peak = fault["peak_in_flight"]["after_settled"]
        goal(
            goals,
            f"faults ({mode}): {fault['settle_s']:.0f} s after the restart, all 200 and peak <= {CAPACITY}",
            f"{settled}; peak {peak} (first {fault['settle_s']:.0f} s: "
            f"{fault['peak_in_flight']['after']})",
            bool(settled) and set(settled) == {"200"} and peak <= CAPACITY,
        )
        during = (fault["readyz"].get("during_outage") or {}).get("limits") or {}
        after = (fault["readyz"].get("after_restart") or {}).get("limits") or {}
        goal(
            goals,
            f"faults ({mode}): /readyz says redis down during the outage, ok after",
            f"{during.get('redis')} / {after.get('redis')}",
            during.get("redis") == "down" and after.get("redis") == "ok",
        )
    return goals


def render(results: dict) -> str:
    machine = results["machine"]
    phases = results["phases"]
    lines = [
        "# Scale-out: two gateways sharing one Redis",
        "",
        f"Run {results['date']} on {machine['cpu']} ({machine['cpus']} CPUs, Python "
        f"{machine['python']}){' (quick run)' if results['quick'] else ''}.",
    ]
    concurrency = phases.get("concurrency")
    if concurrency:
        lines += [
            "",
            f"## Concurrency (MAX_CONCURRENCY={CAPACITY} per gateway, 64 clients, half to each)",
            "",
            "| setup | duration | answered | statuses | peak in flight (sampled / exact) | sample interval |",
            "|---|---|---|---|---|---|",
        ]
        for name, label in (("shared", "REDIS_URL set"), ("local", "no Redis")):
            row = concurrency.get(name)
            if row:
                lines.append(
                    f"| {label} | {row['duration_s']} s | {row['answered']} | {row['statuses']} | "
                    f"{row['peak_sampled']} / {row['peak_exact']} | {row['sample_interval_ms']} ms |"
                )
    rate = phases.get("rate")
    if rate:
        lines += [
            "",
            f"## Rate (one key, {RATE_LIMIT} requests per minute, shared by both gateways)",
            "",
            "| minute (UTC) | hammer | clients | answered | 200 | 429 | 200 per gateway |",
            "|---|---|---|---|---|---|---|",
            f"| {rate['minute_utc']} | {rate['hammer_s']} s | {rate['clients']} | "
            f"{rate['answered']} | {rate['ok']} | {rate['refused_429']} | {rate['ok_per_gateway']} |",
        ]
    cost = phases.get("cost")
    if cost:
        lines += [
            "",
            f"## Cost (one worker on core 0; nginx, redis-server and wrk on core 1; {cost['duration_s']} s phases)",
            "",
            "| round | setup | req/s at 64 | p50 at 1 | p99 at 1 | gateway CPU/req at 64 | at 1 |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in cost["rounds"]:
            for name in ("local", "redis"):
                one, many = row[name]["one"], row[name]["sixty_four"]
                lines.append(
                    f"| {row['round']} | {name} | {many['rps']:,.0f} | {one['p50_ms']:.2f} ms | "
                    f"{one['p99_ms']:.2f} ms | {many['gateway_cpu_ms_per_req']:.3f} ms | "
                    f"{one['gateway_cpu_ms_per_req']:.3f} ms |"
                )
        summary = cost["summary"]
        for name in ("local", "redis"):
            s = summary[name]
            lines.append(
                f"| median | {name} | {s['rps_64']:,.0f} | {s['p50_1_ms']:.2f} ms | "
                f"{s['p99_1_ms']:.2f} ms | {s['cpu_ms_per_req_64']:.3f} ms | "
                f"{s['cpu_ms_per_req_1']:.3f} ms |"
            )
        ratios = ", ".join(f"{100 * r:.0f}%" for r in summary["per_round_rps_ratio"])
        added = ", ".join(f"{a:+.2f} ms" for a in summary["per_round_p50_added_ms"])
        lines += [
            "",
            f"Per round, req/s at 64 with Redis vs without: {ratios}; p50 at 1 added: {added}.",
            f"Gateway CPU per request with Redis (median of the rounds' differences): "
            f"{summary['cpu_added_ms_per_req_1']:+.3f} ms at 1 connection, "
            f"{summary['cpu_added_ms_per_req_64']:+.3f} ms at 64; redis-server's own CPU per "
            f"request at 64: {summary['redis']['redis_server_cpu_ms_per_req_64']:.3f} ms.",
        ]
    faults = phases.get("faults")
    if faults:
        lines += [
            "",
            "## Faults (redis-server SIGKILLed, then started again on the same port)",
            "",
            "| mode | before | outage | after | max latency in outage | peak after (settled) | /readyz outage | /readyz after |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for mode, row in faults.items():
            ready = row["readyz"]

            def show(probe: dict | None) -> str:
                probe = probe or {}
                return f"{probe.get('status')} {json.dumps(probe.get('limits'))}"

            lines.append(
                f"| {mode} | {row['statuses']['before']} | {row['statuses']['outage']} | "
                f"{row['statuses']['after']} | {row['max_latency_overlapping_outage_s']:.2f} s | "
                f"{row['peak_in_flight']['after']} ({row['peak_in_flight']['after_settled']}) | "
                f"{show(ready.get('during_outage'))} | {show(ready.get('after_restart'))} |"
            )
        settle = next(iter(faults.values()))["settle_s"]
        lines += [
            "",
            "Requests are put in a period by their start. Peak in flight: chat completions at the "
            f"model server at once, over the whole after-period (and from {settle:.0f} s after "
            "the restart). Max latency: the slowest request waiting or running at some moment "
            "of the outage.",
        ]
    lines += ["", "## Goals", "", "| goal | this run | met |", "|---|---|---|"]
    for each in results["goals"]:
        lines.append(f"| {each['goal']} | {each['value']} | {'yes' if each['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter phases (smoke run)")
    parser.add_argument("--duration", type=int, default=None, help="cost phase: seconds per wrk")
    parser.add_argument("--rounds", type=int, default=None, help="cost phase: rounds")
    parser.add_argument(
        "--only",
        default="concurrency,rate,cost,faults",
        help="comma-separated phases to run (default: all)",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    quick = args.quick
    duration = args.duration or 3
    rounds = args.rounds or (2 if quick else 11)

    for tool in ("redis-server", "nginx", "wrk", "taskset"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is missing")

    workdir = Path(tempfile.mkdtemp(prefix="llmapi-scale-out-"))
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
        },
        "phases": {},
    }
    phases = results["phases"]

    def fresh(name: str) -> Path:
        path = workdir / name
        path.mkdir(parents=True)
        return path

    began = time.monotonic()
    if "concurrency" in only:
        say("== 1. concurrency: two gateways, MAX_CONCURRENCY=4, 64 clients")
        shared = concurrency_phase(
            fresh("concurrency-redis"), shared=True, duration=8 if quick else 20
        )
        say(f"   with Redis: {json.dumps(shared)}")
        local = concurrency_phase(
            fresh("concurrency-local"), shared=False, duration=3 if quick else 5
        )
        say(f"   without Redis: {json.dumps(local)}")
        phases["concurrency"] = {"shared": shared, "local": local}
    if "rate" in only:
        say(f"== 2. rate: one key, {RATE_LIMIT}/min, both gateways, one UTC minute")
        phases["rate"] = rate_phase(fresh("rate"))
        say(f"   {json.dumps(phases['rate'])}")
    if "cost" in only:
        say(f"== 3. cost: without Redis vs with Redis, {rounds} rounds of {duration} s phases")
        phases["cost"] = cost_phase(fresh("cost"), rounds=rounds, duration=duration)
        say(f"   {json.dumps(phases['cost']['summary'])}")
    if "faults" in only:
        phases["faults"] = {}
        for mode in ("open", "closed"):
            say(f"== 4. faults: LIMITS__ON_REDIS_ERROR={mode}, redis-server killed and restarted")
            periods = (3, 4, 6) if quick else (5, 5, 10)
            row = fault_phase(
                fresh(f"faults-{mode}"),
                mode=mode,
                before=periods[0],
                outage=periods[1],
                after=periods[2],
            )
            phases["faults"][mode] = row
            say(f"   {json.dumps(row)}")

    results["goals"] = evaluate(phases)
    results["elapsed_s"] = round(time.monotonic() - began)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale-out.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (RESULTS / "scale-out.md").write_text(table)
    say("")
    say(table)
    say(f"results: {RESULTS / 'scale-out.json'}, {RESULTS / 'scale-out.md'}; logs in {workdir}")
    missed = [g for g in results["goals"] if not g["met"]]
    if missed:
        say(f"{len(missed)} goal(s) missed:")
        for each in missed:
            say(f"  - {each['goal']}: {each['value']}")
        return 1
    say("all goals met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
