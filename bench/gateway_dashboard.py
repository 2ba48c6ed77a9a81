"""
The dashboard screenshot from a real gateway: `manage.py serve --workers 2` with METRICS__TOKEN,
in front of two fake model servers (tests/fake_upstream.py: one model with two replicas, the
second of which fails for a while and is ejected; a vision model on the first), a real Prometheus
scraping /metrics with the bearer token, and a few minutes of load with a peak that runs into
the text model's concurrency slots (429s). Then scripts/render_dashboard.py draws the panels.

    python bench/gateway_dashboard.py --minutes 4 --out docs/screenshots/dashboard.png
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_upstream import FakeUpstream, _free_port, wait_for_http  # noqa: E402

TOKEN = "dashboard-metrics-token"
API_KEY = "dashboard-key-0123456789"
TEXT, VISION = "chat-model", "vision-model"
# About 150 ms to the first token, then 20 ms per token; answers that are JSON, so requests
# asking for a JSON response_format count as valid structured output.
NORMAL: dict = {
    "delay": 0.15,
    "chunk_interval": 0.02,
    "content": '{"city": "Paris", "country": "France", "population": 2102650}',
}
FAILING: dict = {"status": 503}


def start(argv: list[str], env: dict[str, str] | None, log) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def load(gateway: str, seconds: float, failing: FakeUpstream) -> dict[int, int]:
    """Requests at a rate that rises to a peak and falls again; the second replica fails mid-way."""
    statuses: dict[int, int] = {}
    rng = random.Random(7)
    started = time.monotonic()
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(
        base_url=gateway, headers={"X-API-Key": API_KEY}, timeout=30, limits=limits
    ) as client:

        async def one() -> None:
            question = {"messages": [{"role": "user", "content": "Tell me about Paris. " * 3}]}
            roll = rng.random()
            if roll < 0.1:
                json_format = {"type": "json_object"}
                request = client.post(
                    "/v1/chat/completions",
                    json={**question, "model": TEXT, "response_format": json_format},
                )
            elif roll < 0.5:
                request = client.post("/text_model/chat/completion", json=question)
            elif roll < 0.8:
                request = client.post("/v1/chat/completions", json={**question, "model": TEXT})
            else:
                request = client.post(
                    "/v1/chat/completions", json={**question, "model": VISION, "stream": True}
                )
            try:
                response = await request
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            except httpx.HTTPError:
                statuses[0] = statuses.get(0, 0) + 1

        tasks: set[asyncio.Task] = set()
        while (elapsed := time.monotonic() - started) < seconds:
            phase = elapsed / seconds
            failed = 0.35 < phase < 0.6
            if failed != (failing.behaviour.status == 503):
                failing.behave(**(FAILING if failed else NORMAL))
            # 4 req/s, rising to 40 at the peak (phase 0.7-0.8).
            rate = 4 + 36 * max(0.0, 1 - abs(phase - 0.75) / 0.1)
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "dashboard.png")
    args = parser.parse_args()
    prometheus_binary = shutil.which("prometheus")
    if prometheus_binary is None:
        raise SystemExit("needs the prometheus binary (apt-get install prometheus)")
    workdir = Path(tempfile.mkdtemp(prefix="llmapi-dashboard-"))
    log = (workdir / "services.log").open("wb")
    first, second = FakeUpstream(), FakeUpstream()
    for upstream in (first, second):
        upstream.start()
        upstream.behave(**NORMAL)
    port = _free_port()
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "API_KEY": API_KEY,
        "METRICS__TOKEN": TOKEN,
        "TEXT_MODEL__BASE_URL": f"{first.url},{second.url}",
        "TEXT_MODEL__MODEL_NAME": TEXT,
        "TEXT_MODEL__MAX_CONCURRENCY": "2",
        "TEXT_MODEL__QUEUE_TIMEOUT": "0.1",
        "TEXT_MODEL__EJECT_AFTER": "3",
        "TEXT_MODEL__EJECT_SECONDS": "10",
        "IMAGE_MODEL__BASE_URL": first.url,
        "IMAGE_MODEL__MODEL_NAME": VISION,
        "LOG_LEVEL": "WARNING",
        "SERVER__PID_FILE": str(workdir / "llmapi.pid"),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", "2"]
    gateway = start(argv, env, log)
    gateway_url = f"http://127.0.0.1:{port}"
    prometheus = None
    try:
        wait_for_http(f"{gateway_url}/healthz", process=gateway)
        (workdir / "token").write_text(TOKEN)
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n"
            "scrape_configs:\n  - job_name: llmapi\n"
            f"    authorization:\n      credentials_file: {workdir / 'token'}\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        )
        prometheus_port = _free_port()
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        prometheus = start(
            [
                prometheus_binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            None,
            log,
        )
        wait_for_http(f"{prometheus_url}/-/ready", process=prometheus)
        statuses = asyncio.run(load(gateway_url, args.minutes * 60, second))
        print("statuses:", dict(sorted(statuses.items())), flush=True)
        time.sleep(5)  # the last scrapes
        subprocess.run(
            [
                sys.executable,
                "scripts/render_dashboard.py",
                "--prometheus",
                prometheus_url,
                "--minutes",
                str(args.minutes + 0.5),
                "--out",
                str(args.out),
            ],
            cwd=ROOT,
            check=True,
        )
    finally:
        if prometheus is not None:
            stop(prometheus)
        stop(gateway)
        for upstream in (first, second):
            upstream.stop()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
