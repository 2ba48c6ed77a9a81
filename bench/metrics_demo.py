"""
Traffic for the dashboard screenshot: two worker processes drive the metrics recording API
with a synthetic day-in-the-life (three models, two replicas of one, a replica that fails for a
while and is ejected, quotas that bite at the peak), serve /metrics from one multiprocess
directory, and a real Prometheus scrapes them. Then scripts/render_dashboard.py draws the
dashboard's panels from that Prometheus.

    python bench/metrics_demo.py --minutes 6            # needs the `prometheus` binary

To draw from a real gateway instead, point scripts/render_dashboard.py at its Prometheus.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHAT = "Qwen/Qwen2.5-7B-Instruct"
VISION = "Qwen/Qwen2-VL-7B-Instruct"
EMBEDDED = "SmolLM2-135M-Instruct"
REPLICAS = {
    CHAT: ["http://gpu-1.internal:8000/v1", "http://gpu-2.internal:8000/v1"],
    VISION: ["http://gpu-3.internal:8001/v1"],
    EMBEDDED: [],
}
# Mean time to first token and per output token, in seconds.
SPEED = {CHAT: (0.18, 0.022), VISION: (0.45, 0.030), EMBEDDED: (0.04, 0.009)}
TEAMS = ["research", "support", "interns"]


# --- the worker app ------------------------------------------------------------------------


def _phase() -> float:
    """How far through the run we are, 0..1 (the same clock in both workers)."""
    started = float(os.environ["DEMO_STARTED"])
    return min(1.0, (time.time() - started) / float(os.environ["DEMO_SECONDS"]))


async def _one_request(metrics, rng: random.Random, peak: float, flaky: bool) -> None:
    model = rng.choices([CHAT, VISION, EMBEDDED], weights=[6, 2, 2])[0]
    team = rng.choices(TEAMS, weights=[5, 3, 1])[0]
    endpoint = "openai-chat" if rng.random() < 0.6 else "text-completion"
    if team == "interns" and rng.random() < 0.3 * peak:
        metrics.record_rate_limited("key_quota", model, team)
        metrics.record_request(
            model=model, endpoint=endpoint, status=429, duration=0.001, team=team
        )
        return
    if rng.random() < 0.05 * peak:
        metrics.record_rate_limited("team_quota", model, team)
        metrics.record_request(
            model=model, endpoint=endpoint, status=429, duration=0.001, team=team
        )
        return
    queue = rng.expovariate(1 / (0.002 + 0.4 * peak**3))
    if queue > 1.5:
        metrics.record_rate_limited("model_slots", model, team)
        metrics.record_request(
            model=model, endpoint=endpoint, status=429, duration=queue, team=team
        )
        return
    metrics.record_queue_wait(model, queue)
    first, per_token = SPEED[model]
    ttft = rng.lognormvariate(0, 0.35) * first * (1 + peak)
    tokens = max(2, int(rng.lognormvariate(4.5, 0.6)))
    generation = tokens * per_token * rng.uniform(0.9, 1.3)
    status = 200
    replicas = REPLICAS[model]
    if replicas:
        replica = rng.choice(replicas)
        if flaky and replica.startswith("http://gpu-2") and rng.random() < 0.6:
            metrics.record_upstream_error(model, replica, "status_503")
            metrics.record_retry(model, replica)
            if rng.random() < 0.05:
                metrics.record_ejection(model, replica)
        elif rng.random() < 0.005:
            metrics.record_upstream_error(model, replica, "timeout")
            status = 504
    with metrics.in_flight(model):
        await asyncio.sleep(ttft + generation)
    overhead = rng.lognormvariate(-7.2, 0.4) * (1 + 2 * peak)
    duration = queue + ttft + generation + overhead
    metrics.record_request(
        model=model,
        endpoint=endpoint,
        status=status,
        duration=duration,
        team=team,
        ttft=queue + ttft,
        upstream_seconds=ttft + generation,
        queue_seconds=queue,
        prompt_tokens=int(rng.lognormvariate(5.5, 0.8)),
        completion_tokens=tokens,
    )
    if model == EMBEDDED:
        metrics.record_embedded_tokens_per_second(model, 1 / per_token * rng.uniform(0.85, 1.05))
    if rng.random() < 0.2:
        outcome = rng.choices(["valid", "repaired", "failed"], weights=[85, 12, 3])[0]
        metrics.record_structured_output(model, outcome)


async def _traffic() -> None:
    from observability import metrics

    rng = random.Random(os.getpid())
    tasks: set[asyncio.Task] = set()
    depth = 0
    while _phase() < 1.0:
        phase = _phase()
        peak = max(0.0, 1 - abs(phase - 0.45) / 0.25)  # load peaks a little before half-way
        flaky = 0.6 < phase < 0.8
        for _ in range(rng.randint(0, int(2 + 6 * peak))):
            task = asyncio.create_task(_one_request(metrics, rng, peak, flaky))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        depth = max(0, depth + rng.randint(-3, 3 + int(6 * peak)) - (2 if depth > 20 else 0))
        metrics.set_ledger_queue_depth(min(depth, 50))
        if depth > 45:
            metrics.record_ledger_drop(depth - 45)
        await asyncio.sleep(0.25)


async def app(scope, receive, send) -> None:
    from observability.exposition import render_metrics

    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                from observability import metrics

                metrics.configure(enabled=True, models=[CHAT, VISION, EMBEDDED])
                app.traffic = asyncio.create_task(_traffic())  # type: ignore[attr-defined]
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    accept = dict(scope["headers"]).get(b"accept", b"").decode()
    body, content_type = render_metrics(accept)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --- the driver ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=6)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "dashboard.png")
    args = parser.parse_args()
    prometheus_bin = shutil.which("prometheus")
    if not prometheus_bin:
        raise SystemExit("needs the prometheus binary (apt-get install prometheus)")

    from observability.multiprocess import prepare_multiprocess_dir, remove_multiprocess_dir

    seconds = args.minutes * 60
    os.environ.update(
        DEMO_STARTED=str(time.time()), DEMO_SECONDS=str(seconds), PYTHONPATH=str(ROOT)
    )
    directory = prepare_multiprocess_dir()
    work = Path(tempfile.mkdtemp(prefix="llmapi-demo-"))
    app_port, prometheus_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.metrics_demo:app", "--workers", "2",
         "--port", str(app_port), "--log-level", "warning"],
        cwd=ROOT,
    )  # fmt: skip
    (work / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 2s\nscrape_configs:\n  - job_name: llmapi\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{app_port}']\n"
    )
    with (work / "prometheus.log").open("wb") as log:
        prometheus = subprocess.Popen(
            [prometheus_bin, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port(app_port)
        wait_for_port(prometheus_port)
        print(f"traffic for {args.minutes:g} minutes; Prometheus at 127.0.0.1:{prometheus_port}")
        time.sleep(seconds + 5)
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "render_dashboard.py"),
             "--prometheus", f"http://127.0.0.1:{prometheus_port}",
             "--minutes", str(args.minutes), "--rate-interval", "30s", "--out", str(args.out)],
            check=True,
        )  # fmt: skip
    finally:
        for process in (server, prometheus):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        remove_multiprocess_dir(directory)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
