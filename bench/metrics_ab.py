"""
What metrics cost the whole gateway: req/s at 64 connections with metrics off (no
METRICS__TOKEN) and on, with JSON summary log lines, and without the observability middleware
at all, measured in alternating rounds against the same nginx model server, the gateway alone
on core 0. The ratio reported is the median over rounds of each round's on/off ratio, so a
neighbour's burst in one round does not decide it.

Beside req/s it reports the gateway's CPU time per request (from /proc): on a machine shared
with other work, req/s swings with the neighbours, while CPU per request stays put, and on a
core of its own the gateway's req/s is the inverse of it.

    python bench/metrics_ab.py [--rounds 3 --seconds 10] [--only off on]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (  # noqa: E402
    API_KEY,
    BENCH,
    LOAD_CORE,
    MODEL,
    PYTHON,
    Service,
    free_port,
    gateway_target,
    wrk,
)

TOKEN = "bench-metrics-token"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def variants() -> dict[str, dict[str, str]]:
    """
    "off" is the gateway as shipped without METRICS__TOKEN: the middleware times requests and
    sets the timing headers, nothing is recorded. "on" sets the token: every request is
    recorded. "no middleware" takes the middleware out of the request path altogether.
    """
    return {
        "off": {},
        "on": {"METRICS__TOKEN": TOKEN},
        "on + JSON summary lines": {
            "METRICS__TOKEN": TOKEN,
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
        },
        "no middleware": {"DJANGO_SETTINGS_MODULE": "bench.settings_unobserved"},
    }


def start_gateway(upstream: str, env: dict[str, str], log) -> Service:
    port = free_port()
    base = {
        "ENV_FILE": "/dev/null",
        "API_KEY": API_KEY,
        "TEXT_MODEL__BASE_URL": upstream,
        "TEXT_MODEL__MODEL_NAME": MODEL,
        "TEXT_MODEL__MAX_CONCURRENCY": "2000",
        "LOG_LEVEL": "WARNING",
    }
    argv = [PYTHON, "manage.py", "serve", "--port", str(port), "--workers", "1"]
    return Service("llmapi", argv, core="0", port=port, env={**base, **env}, log=log)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--only", nargs="+", help="variants to run (default: all), e.g. --only off on"
    )
    args = parser.parse_args()
    chosen = {name: env for name, env in variants().items() if not args.only or name in args.only}
    workdir = Path(tempfile.mkdtemp(prefix="llmapi-metrics-ab-"))
    log = (workdir / "services.log").open("wb")
    ngx = workdir / "nginx"
    for sub in ("", "body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (ngx / sub).mkdir(parents=True, exist_ok=True)
    nginx_port = free_port()
    conf = (BENCH / "nginx.conf.template").read_text()
    (ngx / "nginx.conf").write_text(
        conf.replace("__PORT__", str(nginx_port)).replace("__PREFIX__", str(ngx))
    )
    nginx = Service(
        "nginx",
        ["/usr/sbin/nginx", "-c", str(ngx / "nginx.conf"), "-p", str(ngx)],
        core=LOAD_CORE,
        port=nginx_port,
        log=log,
    )
    rps: dict[str, list[float]] = {name: [] for name in chosen}
    cpu: dict[str, list[float]] = {name: [] for name in chosen}
    try:
        for round_ in range(args.rounds):
            for name, env in chosen.items():
                gateway = start_gateway(f"http://127.0.0.1:{nginx_port}", env, log)
                try:
                    target = gateway_target(gateway)
                    wrk(target, connections=64, duration=2)  # warm-up
                    before = cpu_seconds(gateway.pid)
                    result = wrk(target, connections=64, duration=args.seconds)
                    micros = (cpu_seconds(gateway.pid) - before) / result["requests"] * 1e6
                    assert result["non_2xx"] == 0, result
                    rps[name].append(result["rps"])
                    cpu[name].append(micros)
                    print(
                        f"round {round_ + 1} {name:40} {result['rps']:8.0f} req/s"
                        f" {micros:7.0f} µs CPU/request",
                        flush=True,
                    )
                finally:
                    gateway.stop()
    finally:
        nginx.stop()
        log.close()
    cpu_baseline = statistics.median(cpu["off"])
    print()
    for name, values in rps.items():
        median = statistics.median(values)
        per_request = statistics.median(cpu[name])
        ratio = statistics.median(v / off for v, off in zip(values, rps["off"], strict=True))
        print(
            f"{name:25} median {median:7.0f} req/s; median per-round ratio to off {ratio:6.1%};"
            f" {per_request:5.0f} µs CPU/request ({cpu_baseline / per_request:6.1%} of off)"
        )


if __name__ == "__main__":
    main()
