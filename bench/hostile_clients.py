"""
What hostile clients cost the gateway: memory for a burst of large images, and /healthz latency
while clients flood it with huge headers. The figures in the README's Security section come
from here.

    .venv/bin/python bench/hostile_clients.py

It starts a fake model server and a gateway of its own on loopback, and prints a JSON report.
"""

from __future__ import annotations

import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_upstream import FakeUpstream, _free_port, wait_for_http  # noqa: E402

API_KEY = "bench-key"


def status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def large_png(side: int = 7999) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (side, side), (0, 0, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_burst(url: str, pid: int, count: int = 8) -> dict:
    png = large_png()
    files = [("image", ("big.png", png, "image/png"))]
    baseline = status_mib(pid, "VmRSS")
    statuses: list[int] = []

    def send() -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=300) as client:
            statuses.append(
                client.post(
                    "/image_model/chat/completion", data={"prompt": "?"}, files=files
                ).status_code
            )

    started = time.monotonic()
    senders = [threading.Thread(target=send) for _ in range(count)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()
    elapsed = time.monotonic() - started
    time.sleep(1.0)
    return {
        "images": count,
        "png_kib": round(len(png) / 1024),
        "statuses": sorted(statuses),
        "seconds": round(elapsed, 1),
        "rss_before_mib": round(baseline),
        "peak_rss_mib": round(status_mib(pid, "VmHWM")),
        "rss_after_mib": round(status_mib(pid, "VmRSS")),
    }


def header_flood(url: str, *, flooders: int = 3, header_mib: int = 100) -> dict:
    host, port = url.removeprefix("http://").split(":")
    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        chunk = b"a" * (1024 * 1024)
        while not stop.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=5) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: ")
                    for _ in range(header_mib):
                        sock.sendall(chunk)
                        sent[0] += len(chunk)
            except OSError:
                pass

    def probe(seconds: float) -> list[float]:
        latencies = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            httpx.get(f"{url}/healthz", timeout=60)
            latencies.append((time.monotonic() - started) * 1000)
            time.sleep(0.05)
        return latencies

    quiet = probe(2)
    threads = [threading.Thread(target=flood) for _ in range(flooders)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    flooded = probe(5)
    stop.set()
    for thread in threads:
        thread.join()
    return {
        "flooders": flooders,
        "header_mib_each": header_mib,
        "mib_sent_by_flooders": round(sent[0] / 1024 / 1024),
        "healthz_ms_quiet_median": round(statistics.median(quiet), 1),
        "healthz_ms_flooded_median": round(statistics.median(flooded), 1),
        "healthz_ms_flooded_max": round(max(flooded), 1),
    }


def main() -> None:
    upstream = FakeUpstream()
    upstream.start()
    port = _free_port()
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "API_KEY": API_KEY,
        "TEXT_MODEL__BASE_URL": upstream.url,
        "IMAGE_MODEL__BASE_URL": upstream.url,
        "IMAGE_MODEL__MAX_CONCURRENCY": "16",
        "LOG_LEVEL": "ERROR",
    }
    gateway = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", process=gateway)
        report = {
            "image_burst": image_burst(url, gateway.pid),
            "header_flood": header_flood(url),
        }
        print(json.dumps(report, indent=2))
    finally:
        gateway.terminate()
        gateway.wait()
        upstream.stop()


if __name__ == "__main__":
    main()
