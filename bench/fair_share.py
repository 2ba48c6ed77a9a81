"""
Fair sharing of a scarce model, measured from what a slow fake model server saw.

The model server takes `--answer-seconds` (0.5 s) per answer and the gateway allows
`MAX_CONCURRENCY=2`. Each scenario runs on one gateway (slots in process) and on two gateways
sharing one redis-server (slots on Redis, requests split between them):

1. alone: team B asks one question at a time; its median latency.
2. flood: team A keeps 24 requests in flight while team B asks one at a time. Team B's median
   latency (goal: at most 2x alone), how busy the model server stayed (goal: at least 90%),
   and every status (goal: all 200).
3. weights: teams of weight 3 and 1 both keep 24 requests in flight; each team's share of the
   answers the model server gave in the window (goal: 75% and 25%, each +-5 points).
4. priorities: a batch key keeps 24 requests in flight while an interactive key asks one at a
   time: the interactive key's median latency (goal: at most 2x alone) and the batch key's
   share of the model server's busy time (it gets all the rest: the server stays at least 90%
   busy).

Teams and keys are database keys (`manage.py create_api_key --team-weight --priority`). The
model server records each answer's team (from the prompt), start and end; shares and busy time
come from those records, latencies from the clients.

    .venv/bin/python bench/fair_share.py            # about 4 minutes
    .venv/bin/python bench/fair_share.py --quick    # shorter windows

Results go to `bench/results/fair-share.json` and `bench/results/fair-share.md`; the exit status
is 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import free_port  # noqa: E402
from tests.fake_upstream import FakeUpstream, wait_for_http  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
CAPACITY = 2
FLOOD = 24  # requests team A keeps in flight
PEPPER = "fair-share-pepper"


@dataclass
class Answer:
    team: str
    start: float
    end: float


class RecordingUpstream(FakeUpstream):
    """The fake model server, noting each chat completion's team, start and end."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[Answer] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await super().__call__(scope, receive, send)
            return
        start = time.monotonic()
        team = "?"

        async def recording_receive():
            nonlocal team
            message = await receive()
            body = message.get("body", b"")
            if b"team=" in body:
                team = body.split(b"team=", 1)[1].split(b" ", 1)[0].split(b'"', 1)[0].decode()
            return message

        try:
            await super().__call__(scope, recording_receive, send)
        finally:
            self.answers.append(Answer(team, start, time.monotonic()))

    def busy(self, start: float, end: float) -> float:
        """Fraction of the model server's capacity used between `start` and `end`."""
        used = sum(max(0.0, min(a.end, end) - max(a.start, start)) for a in self.answers)
        return used / (CAPACITY * (end - start))

    def shares(self, start: float, end: float) -> Counter[str]:
        """Answers finished in the window, by team."""
        return Counter(a.team for a in self.answers if start <= a.end < end)


# --- the gateways ----------------------------------------------------------------------------


class Gateways:
    """One gateway (slots in process) or two sharing one redis-server, and their keys."""

    def __init__(self, upstream: str, workdir: Path, *, redis_url: str | None, count: int):
        self.env = {
            **os.environ,
            "ENV_FILE": "/dev/null",
            "DJANGO_SETTINGS_MODULE": "llmapi.settings",
            "API_KEY": "fair-share-bootstrap",
            "API_KEYS__PEPPER": PEPPER,
            "TEXT_MODEL__BASE_URL": upstream,
            "TEXT_MODEL__MODEL_NAME": "scarce",
            "TEXT_MODEL__MAX_CONCURRENCY": str(CAPACITY),
            "TEXT_MODEL__QUEUE_TIMEOUT": "300",
            "LOG_LEVEL": "WARNING",
            "DATABASE__SQLITE_PATH": str(workdir / "fair-share.sqlite3"),
            "LIMITS__REDIS_KEY_PREFIX": f"fair{os.getpid()}",
        }
        if redis_url:
            self.env["REDIS_URL"] = redis_url
        subprocess.run(
            [
                PYTHON,
                "-c",
                "import django; django.setup(); "
                "from accounts.database import ensure_database; ensure_database()",
            ],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        self.processes: list[subprocess.Popen] = []
        self.urls: list[str] = []
        self.log = (workdir / "gateways.log").open("ab")
        for _ in range(count):
            port = free_port()
            process = subprocess.Popen(
                [PYTHON, "manage.py", "serve", "--port", str(port), "--workers", "1"],
                cwd=ROOT,
                env=self.env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
            self.processes.append(process)
            self.urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(self.urls, self.processes, strict=True):
            wait_for_http(f"{url}/healthz", process=process)

    def key(self, team: str, name: str, *, weight: float = 1.0, priority: str = "interactive"):
        created = subprocess.run(
            [
                PYTHON,
                "manage.py",
                "create_api_key",
                "--team",
                team,
                "--name",
                name,
                "--team-weight",
                str(weight),
                "--priority",
                priority,
            ],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return created.stdout.strip()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.log.close()


# --- the clients -----------------------------------------------------------------------------


@dataclass
class Client:
    """Requests of one team with one key, spread over the gateways."""

    urls: list[str]
    key: str
    team: str
    statuses: Counter[int]
    latencies: list[float]
    queue_waits: list[float]

    async def ask(self, session: aiohttp.ClientSession, n: int) -> None:
        url = self.urls[n % len(self.urls)]
        body = {
            "messages": [{"role": "user", "content": f"team={self.team} question {n}"}],
            "max_tokens": 8,
        }
        started = time.monotonic()
        async with session.post(
            f"{url}/text_model/chat/completion", json=body, headers={"X-API-Key": self.key}
        ) as response:
            await response.read()
            self.statuses[response.status] += 1
            self.queue_waits.append(float(response.headers.get("x-llmapi-queue-ms", "nan")) / 1000)
        self.latencies.append(time.monotonic() - started)


def client(urls: list[str], key: str, team: str) -> Client:
    return Client(urls, key, team, Counter(), [], [])


async def keep_in_flight(session: aiohttp.ClientSession, who: Client, count: int) -> None:
    """`count` requests in flight for as long as this runs (cancelled to stop)."""

    async def loop(worker: int) -> None:
        n = worker
        while True:
            await who.ask(session, n)
            n += count

    await asyncio.gather(*(loop(i) for i in range(count)))


async def one_at_a_time(session: aiohttp.ClientSession, who: Client, count: int) -> None:
    for n in range(count):
        await who.ask(session, n)


async def drain(upstream: RecordingUpstream) -> None:
    """Wait until the model server has answered everything the gateways had in line."""
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 1.0:
        if upstream.active:
            quiet_since = time.monotonic()
        await asyncio.sleep(0.05)


async def scenario(
    upstream: RecordingUpstream,
    *,
    flood: list[Client],
    measured: Client | None,
    questions: int,
    window: float,
    warmup: float,
) -> dict[str, Any]:
    """Run `flood` clients (24 in flight each) and `measured` asking one at a time."""
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        floods = [asyncio.create_task(keep_in_flight(session, c, FLOOD)) for c in flood]
        await asyncio.sleep(warmup if flood else 0)
        start = time.monotonic()
        if measured is not None:
            await one_at_a_time(session, measured, questions)
        else:
            await asyncio.sleep(window)
        end = time.monotonic()
        for task in floods:
            task.cancel()
        await asyncio.gather(*floods, return_exceptions=True)
    await drain(upstream)
    shares = upstream.shares(start, end)
    return {
        "window_s": round(end - start, 2),
        "busy": round(upstream.busy(start, end), 3),
        "answers": dict(shares),
        "measured_median_s": (
            round(statistics.median(measured.latencies), 3) if measured is not None else None
        ),
        "measured_queue_median_s": (
            round(statistics.median(measured.queue_waits), 3) if measured is not None else None
        ),
        "statuses": {c.team: dict(c.statuses) for c in [*flood, *([measured] if measured else [])]},
    }


async def run_setup(
    upstream: RecordingUpstream, gateways: Gateways, *, quick: bool
) -> dict[str, Any]:
    urls = gateways.urls
    questions = 8 if quick else 16
    window = 8.0 if quick else 16.0
    warmup = 3.0
    keys = {
        "a": gateways.key("team-a", "agent"),
        "b": gateways.key("team-b", "person"),
        "heavy": gateways.key("heavy", "flood", weight=3),
        "light": gateways.key("light", "flood", weight=1),
        "inter": gateways.key("mixed", "interactive"),
        "batch": gateways.key("mixed", "nightly", priority="batch"),
    }
    # Interactive and batch keys of one team; the model server tells them apart by the prompt.
    results: dict[str, Any] = {}
    results["alone"] = await scenario(
        upstream,
        flood=[],
        measured=client(urls, keys["b"], "b"),
        questions=questions,
        window=window,
        warmup=warmup,
    )
    results["flood"] = await scenario(
        upstream,
        flood=[client(urls, keys["a"], "a")],
        measured=client(urls, keys["b"], "b"),
        questions=questions,
        window=window,
        warmup=warmup,
    )
    results["weights"] = await scenario(
        upstream,
        flood=[client(urls, keys["heavy"], "heavy"), client(urls, keys["light"], "light")],
        measured=None,
        questions=questions,
        window=window,
        warmup=warmup,
    )
    results["priorities"] = await scenario(
        upstream,
        flood=[client(urls, keys["batch"], "batch")],
        measured=client(urls, keys["inter"], "interactive"),
        questions=questions,
        window=window,
        warmup=warmup,
    )
    return results


def evaluate(setup: str, r: dict[str, Any]) -> list[dict[str, Any]]:
    alone = r["alone"]["measured_median_s"]
    goals = []

    def goal(name: str, value: Any, target: str, ok: bool) -> None:
        goals.append({"setup": setup, "goal": name, "value": value, "target": target, "ok": ok})

    flood = r["flood"]
    goal(
        "team B median under A's flood / alone",
        round(flood["measured_median_s"] / alone, 2),
        "<= 2",
        flood["measured_median_s"] <= 2 * alone,
    )
    goal("model server busy under the flood", flood["busy"], ">= 0.90", flood["busy"] >= 0.9)
    non_200 = sum(
        n
        for scenario in r.values()
        for statuses in scenario["statuses"].values()
        for status, n in statuses.items()
        if status != 200
    )
    goal("requests not answered 200", non_200, "0", non_200 == 0)
    answers = r["weights"]["answers"]
    total = answers.get("heavy", 0) + answers.get("light", 0)
    heavy = answers.get("heavy", 0) / total if total else 0.0
    goal("weight 3 team's share", round(heavy, 3), "0.75 +- 0.05", abs(heavy - 0.75) <= 0.05)
    goal(
        "weight 1 team's share",
        round(1 - heavy, 3),
        "0.25 +- 0.05",
        abs((1 - heavy) - 0.25) <= 0.05,
    )
    prio = r["priorities"]
    goal(
        "interactive median under a batch flood / alone",
        round(prio["measured_median_s"] / alone, 2),
        "<= 2",
        prio["measured_median_s"] <= 2 * alone,
    )
    goal(
        "model server busy with batch filling the rest",
        prio["busy"],
        ">= 0.90",
        prio["busy"] >= 0.9,
    )
    return goals


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Fair sharing of a scarce model",
        "",
        f"Run {results['date']} on {results['machine']}. A fake model server answering in "
        f"{results['answer_seconds']} s, `MAX_CONCURRENCY={CAPACITY}`; team A keeps {FLOOD} "
        "requests in flight. Produced by `bench/fair_share.py`.",
        "",
        "| setup | scenario | measured median | of which in line | model server busy "
        "| answers in the window |",
        "|---|---|---|---|---|---|",
    ]
    for setup, scenarios in results["setups"].items():
        for name, r in scenarios.items():
            median, in_line = r["measured_median_s"], r["measured_queue_median_s"]
            lines.append(
                f"| {setup} | {name} | {'' if median is None else f'{median:.2f} s'} | "
                f"{'' if in_line is None else f'{in_line:.2f} s'} | "
                f"{r['busy'] * 100:.0f}% | "
                + ", ".join(f"{team}: {n}" for team, n in sorted(r["answers"].items()))
                + " |"
            )
    lines += ["", "| setup | goal | value | target | met |", "|---|---|---|---|---|"]
    for g in results["goals"]:
        lines.append(
            f"| {g['setup']} | {g['goal']} | {g['value']} | {g['target']} | "
            f"{'yes' if g['ok'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> int:
    upstream = RecordingUpstream()
    upstream.behave(delay=args.answer_seconds, content="An answer.")
    upstream.start()
    redis = RedisServer()
    redis.start()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "answer_seconds": args.answer_seconds,
        "setups": {},
        "goals": [],
    }
    try:
        for setup, redis_url, count in (
            ("one gateway", None, 1),
            ("two gateways, one Redis", redis.url, 2),
        ):
            if args.only and args.only != count:
                continue
            with tempfile.TemporaryDirectory(prefix="fair-share-") as workdir:
                gateways = Gateways(upstream.url, Path(workdir), redis_url=redis_url, count=count)
                try:
                    r = await run_setup(upstream, gateways, quick=args.quick)
                finally:
                    gateways.stop()
            results["setups"][setup] = r
            results["goals"] += evaluate(setup, r)
            print(json.dumps({setup: r}, indent=1), flush=True)
    finally:
        redis.stop()
        upstream.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fair-share.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "fair-share.md").write_text(render(results))
    print(render(results))
    return 0 if all(g["ok"] for g in results["goals"]) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows")
    parser.add_argument("--answer-seconds", type=float, default=0.5)
    parser.add_argument("--only", type=int, choices=(1, 2), help="only the setup of N gateways")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
