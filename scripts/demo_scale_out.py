"""
Scale-out demo: two gateway instances share one MAX_CONCURRENCY through Redis.

Starts a throw-away redis-server, a fake model server that takes `--delay` seconds per answer,
and two gateways on free ports, both with REDIS_URL and TEXT_MODEL__MAX_CONCURRENCY=4. Then
sends `--requests` requests at once, half to each gateway, while it watches how many the model
server is answering at the same moment. With the limit shared, that never exceeds 4; counted
per instance it would reach 8.

    scripts/demo-scale-out
    scripts/demo-scale-out --no-redis     # the same without REDIS_URL: per-instance limits
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_upstream import FakeUpstream, _free_port, wait_for_http  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

API_KEY = "demo-key-0123456789"
CAPACITY = 4


def start_gateway(
    upstream: FakeUpstream, redis_url: str, log_dir: Path
) -> tuple[str, subprocess.Popen]:
    port = _free_port()
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "API_KEY": API_KEY,
        "TEXT_MODEL__BASE_URL": upstream.url,
        "TEXT_MODEL__MODEL_NAME": "fake-llm",
        "TEXT_MODEL__MAX_CONCURRENCY": str(CAPACITY),
        "TEXT_MODEL__QUEUE_TIMEOUT": "60",
        "REDIS_URL": redis_url,
        "LIMITS__ON_REDIS_ERROR": "closed",
        # Each gateway's own throw-away database (keys, usage), beside its log.
        "DATABASE__SQLITE_PATH": str(log_dir / f"gateway-{port}.sqlite3"),
        "API_KEYS__PEPPER": "demo-pepper",
    }
    log = (log_dir / f"gateway-{port}.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 (our own interpreter and manage.py)
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/healthz", process=process)
    return url, process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds per model answer")
    parser.add_argument(
        "--no-redis", action="store_true", help="per-instance limits, for comparison"
    )
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="llmapi-demo-"))
    redis = None if args.no_redis else RedisServer()
    upstream = FakeUpstream()
    gateways: list[subprocess.Popen] = []
    try:
        if redis is not None:
            redis.start()
        upstream.start()
        upstream.behave(delay=args.delay)
        urls = []
        for _ in range(2):
            url, process = start_gateway(upstream, redis.url if redis else "", log_dir)
            urls.append(url)
            gateways.append(process)
        print(f"redis: {redis.url if redis else 'none'}; gateways: {', '.join(urls)}")

        peak = 0
        watching = True

        def watch() -> None:
            nonlocal peak
            while watching:
                peak = max(peak, upstream.active)
                time.sleep(0.002)

        watcher = threading.Thread(target=watch)
        watcher.start()

        def ask(i: int) -> int:
            response = httpx.post(
                f"{urls[i % 2]}/text_model/chat/completion",
                headers={"X-API-Key": API_KEY},
                json={"messages": [{"role": "user", "content": f"Question {i}"}]},
                timeout=120,
            )
            return response.status_code

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.requests) as pool:
            statuses = list(pool.map(ask, range(args.requests)))
        elapsed = time.monotonic() - started
        watching = False
        watcher.join()

        print(f"{args.requests} requests, half to each gateway, in {elapsed:.1f} s")
        print(f"statuses: { {s: statuses.count(s) for s in sorted(set(statuses))} }")
        print(f"most requests at the model server at once: {peak} (MAX_CONCURRENCY={CAPACITY})")
        if args.no_redis:
            print(f"without Redis each gateway counts alone: up to {2 * CAPACITY} expected")
            return 0
        if peak > CAPACITY:
            print("the limit was NOT shared: is RedisSlots wired into the gateway?")
            return 1
        print("the limit held across both gateways")
        return 0
    finally:
        for process in gateways:
            process.send_signal(signal.SIGTERM)
        for process in gateways:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        upstream.stop()
        if redis is not None:
            redis.stop()
        print(f"gateway logs: {log_dir}")


if __name__ == "__main__":
    sys.exit(main())
