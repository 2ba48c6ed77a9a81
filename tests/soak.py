"""
Soak test: mixed traffic for a bounded time against a gateway whose model server injects
faults (errors, delays, mid-stream drops), then checks that nothing was lost or leaked.

A short run is part of the test suite (tests/integration/test_soak.py). For a long run:

    .venv/bin/python -m tests.soak --seconds 600

It starts its own fake model server and gateway on loopback, and prints a JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.images import png_bomb
from tests.security.hostile import HOSTILE_RESPONSE_FORMATS

QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}

# What each kind of request may answer. Anything else is unexpected.
UPSTREAM_VERDICTS = {200, 429, 502, 503, 504}
EXPECTED = {
    "completion": UPSTREAM_VERDICTS,
    "stream": UPSTREAM_VERDICTS,
    "sse": UPSTREAM_VERDICTS,
    "aborted": UPSTREAM_VERDICTS,
    "bad_input": {400},
    "hostile_schema": {400},
    "no_key": {401},
    # Hostile images are refused before any model is involved (configured or not).
    "image_bomb": {413},
    "bad_image": {400},
}


PIXEL_BOMB = png_bomb()  # 1.6 gigapixels


@dataclass
class SoakReport:
    seconds: float
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    cut_streams: int = 0
    rss_kib: list[int] = field(default_factory=list)
    slots_in_use_after: int | None = None
    upstream_active_after: int | None = None
    upstream_faults: dict = field(default_factory=dict)

    @property
    def rss_growth(self) -> float:
        quarter = max(1, len(self.rss_kib) // 4)
        first = statistics.mean(self.rss_kib[:quarter])
        last = statistics.mean(self.rss_kib[-quarter:])
        return (last - first) / first

    def as_dict(self) -> dict:
        return {
            "seconds": self.seconds,
            "requests": self.requests,
            "statuses": dict(self.statuses),
            "unexpected": self.unexpected[:20],
            "cut_streams": self.cut_streams,
            "rss_growth_pct": round(100 * self.rss_growth, 1) if self.rss_kib else None,
            "slots_in_use_after": self.slots_in_use_after,
            "upstream_active_after": self.upstream_active_after,
            "upstream_faults": self.upstream_faults,
        }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _one(client: httpx.AsyncClient, kind: str, report: SoakReport) -> None:
    status = None
    try:
        if kind == "completion":
            status = (await client.post("/text_model/chat/completion", json=QUESTION)).status_code
        elif kind in ("stream", "sse", "aborted"):
            headers = {"Accept": "text/event-stream"} if kind == "sse" else {}
            async with client.stream(
                "POST", "/text_model/chat/stream", json=QUESTION, headers=headers
            ) as response:
                status = response.status_code
                async for _ in response.aiter_bytes():
                    if kind == "aborted":
                        break  # the client goes away mid-answer
        elif kind == "bad_input":
            body = random.choice(
                [{"messages": []}, {**QUESTION, "temperature": 7}, {"messages": "hi"}, {}]
            )
            status = (await client.post("/text_model/chat/completion", json=body)).status_code
        elif kind == "hostile_schema":
            body = {**QUESTION, "response_format": random.choice(HOSTILE_RESPONSE_FORMATS)}
            status = (await client.post("/text_model/chat/completion", json=body)).status_code
        elif kind in ("image_bomb", "bad_image"):
            data = PIXEL_BOMB if kind == "image_bomb" else b"\x89PNG\r\n\x1a\n" + b"\0" * 64
            response = await client.post(
                "/image_model/chat/completion",
                data={"prompt": "What is this?"},
                files=[("image", ("hostile.png", data, "image/png"))],
            )
            status = response.status_code
        elif kind == "no_key":
            status = (
                await client.post(
                    "/text_model/chat/completion", json=QUESTION, headers={"X-API-Key": ""}
                )
            ).status_code
    except httpx.RemoteProtocolError:
        # A plain-text stream whose model server dropped mid-answer is cut on purpose.
        report.cut_streams += 1
        status = status or 0
    report.requests += 1
    report.statuses[status] += 1
    if status not in EXPECTED[kind] and not (status == 200 and kind == "stream"):
        report.unexpected.append(f"{kind}: {status}")


async def run_soak(
    *, gateway_url: str, api_key: str, gateway_pid: int, seconds: float, concurrency: int = 12
) -> SoakReport:
    report = SoakReport(seconds=seconds)
    kinds = (
        ["completion"] * 4
        + ["stream"] * 2
        + ["sse"] * 2
        + ["aborted"] * 2
        + ["bad_input", "hostile_schema", "no_key", "image_bomb", "bad_image"]
    )
    warmup = min(2.0, seconds / 5)
    start = time.monotonic()
    deadline = start + seconds
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(
        base_url=gateway_url, headers={"X-API-Key": api_key}, timeout=30, limits=limits
    ) as client:

        async def worker() -> None:
            while time.monotonic() < deadline:
                await _one(client, random.choice(kinds), report)

        async def sampler() -> None:
            while time.monotonic() < deadline:
                if time.monotonic() - start > warmup:
                    report.rss_kib.append(rss_kib(gateway_pid))
                await asyncio.sleep(0.25)

        await asyncio.gather(sampler(), *(worker() for _ in range(concurrency)))
        await asyncio.sleep(1.0)  # let cancelled upstream requests finish closing
        ready = (await client.get("/readyz", params={"details": "true"})).json()
        report.slots_in_use_after = ready["models"]["text"]["in_flight"]
    return report


def main() -> None:
    import os
    import subprocess
    import sys

    from tests.fake_upstream import FakeUpstream, _free_port, wait_for_http

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--chaos", type=float, default=0.2, help="fault probability per request")
    args = parser.parse_args()

    upstream = FakeUpstream()
    upstream.start()
    upstream.behave(chunks=[f"w{i} " for i in range(8)], chunk_interval=0.01, chaos=args.chaos)
    port = _free_port()
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "API_KEY": "soak-key",
        "TEXT_MODEL__BASE_URL": upstream.url,
        "TEXT_MODEL__MAX_CONCURRENCY": "8",
        "TEXT_MODEL__QUEUE_TIMEOUT": "0.5",
        "LOG_LEVEL": "WARNING",
    }
    root = Path(__file__).resolve().parent.parent
    gateway = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=gateway)
        report = asyncio.run(
            run_soak(
                gateway_url=f"http://127.0.0.1:{port}",
                api_key="soak-key",
                gateway_pid=gateway.pid,
                seconds=args.seconds,
            )
        )
        report.upstream_active_after = upstream.active
        report.upstream_faults = dict(upstream.faults)
        print(json.dumps(report.as_dict(), indent=2))
    finally:
        gateway.terminate()
        gateway.wait()
        upstream.stop()


if __name__ == "__main__":
    main()
