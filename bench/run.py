"""
The benchmark: llmapi against LiteLLM's proxy and against calling the model server directly,
in one run, on this machine.

Layout (2 cores): the gateway under test runs alone on core 0; the model servers (nginx for
whole answers, bench/stream_upstream.py for streams) and the load driver (wrk, or the Python
stream client) share core 1. Only ratios measured in the same run are meaningful on a shared,
noisy machine.

    scripts/bench                 # installs what it needs, then runs this
    python bench/run.py --quick   # shorter phases, for a smoke run
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
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PYTHON = sys.executable
GATEWAY_CORE, LOAD_CORE = "0", "1"
API_KEY = "bench-key"
LITELLM_KEY = "sk-bench"
MODEL = "bench-model"
QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (uvicorn workers), in KiB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


class Service:
    """A process pinned to a core, stopped at the end."""

    key = API_KEY  # the gateway's client key (a database key with quotas, for llmapi)
    database = ""  # the gateway's SQLite file

    def __init__(self, name: str, argv: list[str], *, core: str, port: int, env=None, log=None):
        self.name, self.port = name, port
        self.log = log or open(os.devnull, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["taskset", "-c", core, *argv],
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        wait_for_port(port, self.process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Target:
    """One thing to measure: where to send requests and how."""

    name: str
    url: str  # non-streaming URL
    body: dict
    headers: dict
    stream_url: str = ""
    stream_body: dict = field(default_factory=dict)
    pid: int | None = None


# --- wrk ----------------------------------------------------------------------------------


def wrk(target: Target, *, connections: int, duration: int) -> dict:
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
    headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in target.headers.items())
    script.write(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(target.body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + headers
    )
    script.close()
    output = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CORE,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            script.name,
            target.url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    return parse_wrk(output)


# Each wrk phase is run this many times per peer and its median round is kept (by p50 at one
# connection, by req/s at 64): on a shared machine one phase can land in a burst of someone
# else's work. Every peer is measured the same way.
ROUNDS = 3


def median_of(rounds: int, target: Target, *, connections: int, duration: int) -> dict:
    runs = [wrk(target, connections=connections, duration=duration) for _ in range(rounds)]
    key = "p50_ms" if connections == 1 else "rps"
    runs.sort(key=lambda run: run[key])
    chosen = dict(runs[len(runs) // 2])
    chosen["rounds"] = [run[key] for run in runs]
    return chosen


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(output: str) -> dict:
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": _ms(percentiles["50"]),
        "p99_ms": _ms(percentiles["99"]),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


# --- streaming client -----------------------------------------------------------------------


async def one_stream(session: aiohttp.ClientSession, target: Target) -> tuple[float, float, bool]:
    """(time to first byte, total time, complete) of one streamed answer, in ms."""
    start = time.perf_counter()
    first = None
    body = b""
    async with session.post(
        target.stream_url, json=target.stream_body, headers=target.headers
    ) as r:
        ok = r.status == 200
        async for piece in r.content.iter_any():
            if first is None and piece:
                first = time.perf_counter()
            body += piece
    end = time.perf_counter()
    complete = ok and b"word15" in body
    return (first or end) - start, end - start, complete


async def stream_latency(target: Target, *, samples: int) -> dict:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await one_stream(session, target)  # warm-up: connection pools, caches
        results = [await one_stream(session, target) for _ in range(samples)]
    return {
        "ttfb_ms": statistics.median(r[0] for r in results) * 1000,
        "total_ms": statistics.median(r[1] for r in results) * 1000,
        "complete": sum(r[2] for r in results),
        "samples": samples,
    }


async def stream_ramp(target: Target, levels: list[int]) -> list[dict]:
    rows = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for level in levels:
            peak = {"rss": 0}
            done = asyncio.Event()

            async def sample(peak=peak, done=done):
                while not done.is_set():
                    if target.pid:
                        peak["rss"] = max(peak["rss"], rss_kib(target.pid))
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            started = time.perf_counter()
            results = await asyncio.gather(
                *(one_stream(session, target) for _ in range(level)), return_exceptions=True
            )
            done.set()
            await sampler
            completed = sum(1 for r in results if not isinstance(r, BaseException) and r[2])
            rows.append(
                {
                    "concurrent": level,
                    "completed": completed,
                    "errors": level - completed,
                    "wall_s": round(time.perf_counter() - started, 2),
                    "peak_rss_mib": round(peak["rss"] / 1024, 1) if target.pid else None,
                }
            )
            await asyncio.sleep(0.5)
    return rows


async def fire(target: Target, *, count: int, concurrency: int = 32) -> int:
    """Send `count` whole requests; return how many were not 200."""
    failures = 0
    queue = iter(range(count))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker():
            nonlocal failures
            for _ in queue:
                async with session.post(target.url, json=target.body, headers=target.headers) as r:
                    await r.read()
                    failures += r.status != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


async def memory_growth(target: Target) -> dict:
    failures = await fire(target, count=1000)
    after_1k = rss_kib(target.pid)
    failures += await fire(target, count=9000)
    after_10k = rss_kib(target.pid)
    return {
        "rss_after_1k_mib": round(after_1k / 1024, 1),
        "rss_after_10k_mib": round(after_10k / 1024, 1),
        "growth_pct": round(100 * (after_10k - after_1k) / after_1k, 1),
        "failures": failures,
    }


# --- the peers --------------------------------------------------------------------------------


def start_gateway(
    upstream: str, log, workdir: Path, extra_env: dict[str, str] | None = None
) -> Service:
    """
    One gateway worker as a team would run it: a database key with quotas on every request
    (limits far above the load, so none refuses), the usage ledger writing a row per request,
    and Prometheus metrics recorded. `extra_env` adds settings (for example `REDIS_URL`).
    """
    port = free_port()
    env = {
        "ENV_FILE": "/dev/null",
        "API_KEY": API_KEY,
        "TEXT_MODEL__BASE_URL": upstream,
        "TEXT_MODEL__MODEL_NAME": MODEL,
        "TEXT_MODEL__MAX_CONCURRENCY": "2000",
        "LOG_LEVEL": "WARNING",
        "DATABASE__SQLITE_PATH": str(workdir / f"llmapi-{port}.sqlite3"),
        "METRICS__TOKEN": "bench-metrics",
        "SERVER__PID_FILE": str(workdir / f"llmapi-{port}.pid"),
        **(extra_env or {}),
    }
    huge = "1000000000"
    key = create_api_key(
        env,
        "--name",
        "bench",
        "--requests-per-minute",
        huge,
        "--tokens-per-minute",
        huge,
        "--concurrent-requests",
        "100000",
        "--tokens-per-day",
        huge,
        "--tokens-per-month",
        huge,
    )
    argv = [PYTHON, "manage.py", "serve", "--port", str(port), "--workers", "1"]
    service = Service("llmapi", argv, core=GATEWAY_CORE, port=port, env=env, log=log)
    service.key = key
    service.database = env["DATABASE__SQLITE_PATH"]
    return service


def create_api_key(env: dict[str, str], *options: str) -> str:
    """
    Create the gateway's database (the settings in `env`) if needed, then a key of team
    "bench" with `options` (`manage.py create_api_key`'s flags); returns the key.
    """
    full_env = {**os.environ, **env, "DJANGO_SETTINGS_MODULE": "llmapi.settings"}
    subprocess.run(
        [
            PYTHON,
            "-c",
            "import django; django.setup(); "
            "from accounts.database import ensure_database; ensure_database()",
        ],
        cwd=ROOT,
        env=full_env,
        check=True,
    )
    created = subprocess.run(
        [PYTHON, "manage.py", "create_api_key", "--team", "bench", *options],
        cwd=ROOT,
        env=full_env,
        check=True,
        capture_output=True,
        text=True,
    )
    return created.stdout.strip()


def start_nginx(workdir: Path, log) -> Service:
    """nginx answering a fixed chat completion (bench/nginx.conf.template), on the load core."""
    port = free_port()
    ngx = workdir / "nginx"
    for sub in ("", "body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (ngx / sub).mkdir(parents=True, exist_ok=True)
    conf = (BENCH / "nginx.conf.template").read_text()
    conf = conf.replace("__PORT__", str(port)).replace("__PREFIX__", str(ngx))
    (ngx / "nginx.conf").write_text(conf)
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    argv = [nginx_bin, "-c", str(ngx / "nginx.conf"), "-p", str(ngx)]
    return Service("nginx", argv, core=LOAD_CORE, port=port, log=log)


def gateway_requests_answered(service: Service) -> int:
    """Requests the gateway answered, from its own Prometheus counter."""
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{service.port}/metrics",
        headers={"Authorization": "Bearer bench-metrics"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("llmapi_requests_total{")
        )
    )


def ledger_rows(service: Service) -> int:
    """Usage-ledger rows written by a gateway that has shut down (SIGTERM flushes its queue)."""
    import sqlite3

    with sqlite3.connect(service.database) as db:
        return db.execute("SELECT COUNT(*) FROM usage_usagerecord").fetchone()[0]


def start_litellm(litellm: Path, upstream: str, workdir: Path, log) -> Service:
    port = free_port()
    config = workdir / f"litellm-{port}.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: none\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
    )
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    argv = [
        str(litellm),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    return Service("litellm", argv, core=GATEWAY_CORE, port=port, env=env, log=log)


def gateway_target(service: Service, *, openai_route: bool = False) -> Target:
    base = f"http://127.0.0.1:{service.port}"
    if openai_route:
        return Target(
            "llmapi /v1",
            f"{base}/v1/chat/completions",
            {"model": MODEL, **QUESTION},
            {"Authorization": f"Bearer {service.key}"},
            f"{base}/v1/chat/completions",
            {"model": MODEL, "stream": True, **QUESTION},
            service.pid,
        )
    return Target(
        "llmapi",
        f"{base}/text_model/chat/completion",
        QUESTION,
        {"X-API-Key": service.key},
        f"{base}/text_model/chat/stream",
        QUESTION,
        service.pid,
    )


def litellm_target(service: Service) -> Target:
    url = f"http://127.0.0.1:{service.port}/v1/chat/completions"
    return Target(
        "LiteLLM",
        url,
        {"model": MODEL, **QUESTION},
        {"Authorization": f"Bearer {LITELLM_KEY}"},
        url,
        {"model": MODEL, "stream": True, **QUESTION},
        service.pid,
    )


# --- the run --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short phases (smoke run)")
    parser.add_argument("--litellm", default=str(BENCH / ".venv-litellm" / "bin" / "litellm"))
    args = parser.parse_args()
    duration = 3 if args.quick else 10
    rounds = 1 if args.quick else ROUNDS
    samples = 10 if args.quick else 30
    levels = [100, 250] if args.quick else [100, 250, 500, 1000]

    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is missing; run scripts/bench, which installs it.")

    workdir = Path(tempfile.mkdtemp(prefix="llmapi-bench-"))
    log = open(workdir / "services.log", "wb")  # noqa: SIM115
    services: list[Service] = []
    results: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "layout": "gateway alone on core 0; model servers and load driver on core 1"
            + (f"; each wrk phase the median of {rounds} rounds" if rounds > 1 else ""),
        },
        "peers": {},
        "notes": [],
    }

    def phase(title: str) -> None:
        print(f"== {title}", flush=True)

    try:
        nginx = start_nginx(workdir, log)
        services.append(nginx)
        stream_port = free_port()
        services.append(
            Service(
                "stream-upstream",
                [
                    PYTHON,
                    str(BENCH / "stream_upstream.py"),
                    "--port",
                    str(stream_port),
                    "--chunks",
                    "16",
                    "--interval",
                    "10",
                ],
                core=LOAD_CORE,
                port=stream_port,
                log=log,
            )
        )
        nginx_url = f"http://127.0.0.1:{nginx.port}"
        stream_url = f"http://127.0.0.1:{stream_port}"
        direct = Target(
            "direct",
            f"{nginx_url}/v1/chat/completions",
            {"model": MODEL, **QUESTION},
            {},
            f"{stream_url}/v1/chat/completions",
            {"model": MODEL, "stream": True, **QUESTION},
        )

        litellm = Path(args.litellm)
        peers = ["direct", "llmapi", "llmapi /v1"]
        if litellm.exists():
            peers.append("LiteLLM")
        else:
            results["notes"].append(
                f"LiteLLM not measured: {litellm} is missing (scripts/bench installs it)."
            )
            print(results["notes"][-1])

        for name in peers:
            phase(name)
            row: dict = {}
            service = None
            if name == "direct":
                target = direct
            elif name.startswith("llmapi"):
                service = start_gateway(nginx_url, log, workdir)
                target = gateway_target(service, openai_route=name.endswith("/v1"))
            else:
                try:
                    service = start_litellm(litellm, nginx_url, workdir, log)
                except RuntimeError as exc:
                    results["notes"].append(
                        f"LiteLLM did not start ({exc}); see {workdir}/services.log."
                    )
                    print(results["notes"][-1])
                    continue
                target = litellm_target(service)
            asyncio.run(fire(target, count=200))  # warm-up
            row["one_connection"] = median_of(rounds, target, connections=1, duration=duration)
            row["sixty_four_connections"] = median_of(
                rounds, target, connections=64, duration=duration
            )
            if service is not None and name == "llmapi":
                row["memory"] = asyncio.run(memory_growth(target))
            if service is not None:
                answered = gateway_requests_answered(service) if name.startswith("llmapi") else None
                service.stop()
                if answered is not None:
                    row["ledger"] = {"answered": answered, "rows": ledger_rows(service)}
            # Streaming phases: the same peer in front of the streaming model server.
            if name == "direct":
                stream_target = direct
            elif name.startswith("llmapi"):
                service = start_gateway(stream_url, log, workdir)
                stream_target = gateway_target(service, openai_route=name.endswith("/v1"))
            else:
                service = start_litellm(litellm, stream_url, workdir, log)
                stream_target = litellm_target(service)
            row["stream"] = asyncio.run(stream_latency(stream_target, samples=samples))
            if name in ("llmapi", "LiteLLM"):
                row["ramp"] = asyncio.run(stream_ramp(stream_target, levels))
            if service is not None:
                service.stop()
            results["peers"][name] = row
            print(json.dumps(row), flush=True)
    finally:
        for service in reversed(services):
            service.stop()
        log.close()

    results["targets"] = evaluate(results["peers"])
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (RESULTS / "latest.md").write_text(table)
    print(table)
    print(f"results: {out}")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def evaluate(peers: dict) -> list[dict]:
    """The goals, as ratios within this run."""
    ours, direct, lite = peers.get("llmapi"), peers.get("direct"), peers.get("LiteLLM")
    goals = []
    if ours and lite:
        ratio = ours["sixty_four_connections"]["rps"] / lite["sixty_four_connections"]["rps"]
        goals.append(
            {
                "goal": ">= 4x LiteLLM req/s at 64 connections",
                "value": f"{ratio:.1f}x",
                "met": ratio >= 4,
            }
        )
        added_ours = ours["one_connection"]["p50_ms"] - direct["one_connection"]["p50_ms"]
        added_lite = lite["one_connection"]["p50_ms"] - direct["one_connection"]["p50_ms"]
        goals.append(
            {
                "goal": "added p50 at 1 connection <= 1/5 of LiteLLM's",
                "value": f"{added_ours:.2f} ms vs {added_lite:.2f} ms (1/{added_lite / added_ours:.1f})",
                "met": added_ours * 5 <= added_lite,
            }
        )
        p99_ours = ours["one_connection"]["p99_ms"]
        p99_lite = lite["one_connection"]["p99_ms"]
        goals.append(
            {
                "goal": "p99 at 1 connection <= LiteLLM's",
                "value": f"{p99_ours:.2f} ms vs {p99_lite:.2f} ms",
                "met": p99_ours <= p99_lite,
            }
        )
    if ours and direct:
        ttfb = ours["stream"]["ttfb_ms"] - direct["stream"]["ttfb_ms"]
        goals.append(
            {
                "goal": "stream first byte within 3 ms of direct",
                "value": f"+{ttfb:.2f} ms",
                "met": ttfb <= 3,
            }
        )
        total = ours["stream"]["total_ms"] / direct["stream"]["total_ms"] - 1
        goals.append(
            {
                "goal": "stream total within 10% of direct",
                "value": f"+{100 * total:.1f}%",
                "met": total <= 0.10,
            }
        )
        non_2xx = (
            ours["sixty_four_connections"]["non_2xx"]
            + ours["sixty_four_connections"]["socket_errors"]
        )
        goals.append(
            {"goal": "zero non-2xx under load", "value": str(non_2xx), "met": non_2xx == 0}
        )
        if ours.get("ramp"):
            top = ours["ramp"][-1]
            goals.append(
                {
                    "goal": f"{top['concurrent']} concurrent streams complete",
                    "value": f"{top['completed']}/{top['concurrent']}",
                    "met": top["errors"] == 0,
                }
            )
        if ours.get("memory"):
            growth = ours["memory"]["growth_pct"]
            goals.append(
                {
                    "goal": "RSS after 10k within 10% of after 1k",
                    "value": f"{growth:+.1f}%",
                    "met": growth <= 10,
                }
            )
        if ours.get("ledger"):
            ledger = ours["ledger"]
            goals.append(
                {
                    "goal": "usage-ledger rows = requests answered (keys, quotas, ledger on)",
                    "value": f"{ledger['rows']} rows / {ledger['answered']} requests",
                    "met": ledger["rows"] >= ledger["answered"],
                }
            )
    return goals


def render(results: dict) -> str:
    peers = results["peers"]
    lines = [
        f"Run {results['date']} on {results['machine']['cpu']} ({results['machine']['cpus']} cores, "
        f"Python {results['machine']['python']}); {results['machine']['layout']}.",
        "",
        "| target | 1 conn p50 | 1 conn p99 | 64 conn req/s | 64 conn p50 | 64 conn p99 | non-2xx | stream first byte | stream total |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in peers.items():
        one, many, stream = row["one_connection"], row["sixty_four_connections"], row["stream"]
        lines.append(
            f"| {name} | {one['p50_ms']:.2f} ms | {one['p99_ms']:.2f} ms | {many['rps']:,.0f} | "
            f"{many['p50_ms']:.1f} ms | {many['p99_ms']:.1f} ms | {many['non_2xx'] + many['socket_errors']} | "
            f"{stream['ttfb_ms']:.2f} ms | {stream['total_ms']:.1f} ms |"
        )
    for name in ("llmapi", "LiteLLM"):
        if peers.get(name, {}).get("ramp"):
            lines += ["", f"Concurrent streams through {name} (16 chunks, 10 ms apart):", ""]
            lines += [
                "| concurrent | completed | errors | wall time | peak RSS |",
                "|---|---|---|---|---|",
            ]
            for r in peers[name]["ramp"]:
                lines.append(
                    f"| {r['concurrent']} | {r['completed']} | {r['errors']} | {r['wall_s']} s | {r['peak_rss_mib']} MiB |"
                )
    memory = peers.get("llmapi", {}).get("memory")
    if memory:
        lines += [
            "",
            f"llmapi memory: {memory['rss_after_1k_mib']} MiB after 1k requests, "
            f"{memory['rss_after_10k_mib']} MiB after 10k ({memory['growth_pct']:+.1f}%).",
        ]
    lines += ["", "| goal | this run | met |", "|---|---|---|"]
    for goal in results["targets"]:
        lines.append(f"| {goal['goal']} | {goal['value']} | {'yes' if goal['met'] else 'no'} |")
    for note in results["notes"]:
        lines.append(f"\n{note}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
