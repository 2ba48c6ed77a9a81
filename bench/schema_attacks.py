"""
Latency budgets of the structured-output defences, measured: the figures the tests used to
assert, now reported (a busy machine makes them slower, which is a measurement, not a bug).

- Hostile schemas and answers are answered within 5 s: a `$ref` to a host that never answers
  (nothing is fetched), a catastrophic regex in the answer's schema, `uniqueItems` over 6000
  objects.
- /healthz keeps a p90 under 100 ms while the worst schema the limits accept is checked against
  a 600 KB answer (the check runs off the event loop until its budget ends it).

    .venv/bin/python bench/schema_attacks.py [--rounds 3]

It starts a fake model server and a gateway of its own on loopback, and prints a JSON report
with each figure, its budget and whether it was met. `tests/security/test_schema_attacks.py`
checks the behaviour (the answers, and /healthz answered during the check).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_upstream import FakeUpstream, _free_port, wait_for_http  # noqa: E402
from tests.security.hostile import COSTLY_ANSWER, COSTLY_SCHEMA  # noqa: E402

API_KEY = "bench-key"
ANSWER_BUDGET_S = 5.0
HEALTHZ_P90_BUDGET_MS = 100.0
MESSAGES = [{"role": "user", "content": "Analyze this product review"}]


def schema_request(schema: dict) -> dict:
    return {
        "messages": MESSAGES,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }


def timed_post(url: str, body: dict) -> tuple[int, float]:
    started = time.perf_counter()
    response = httpx.post(
        f"{url}/text_model/chat/completion",
        json=body,
        headers={"X-API-Key": API_KEY},
        timeout=120,
    )
    return response.status_code, time.perf_counter() - started


def hostile_answers(url: str, upstream: FakeUpstream, rounds: int) -> dict:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    ref = f"http://127.0.0.1:{silent.getsockname()[1]}/schema.json"
    cases = {
        "ref_to_a_silent_host": (
            '{"a": "x"}',
            schema_request({"properties": {"a": {"$ref": ref}}}),
        ),
        "redos_answer": (
            json.dumps({"a": "a" * 30 + "!"}),
            schema_request(
                {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}
            ),
        ),
        "unique_items_6000": (
            json.dumps({"a": [{"k": i, "v": [i, str(i)]} for i in range(6000)]}),
            schema_request(
                {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}
            ),
        ),
    }
    report = {}
    try:
        for name, (answer, body) in cases.items():
            upstream.behave(content=answer)
            seconds, statuses = [], set()
            for _ in range(rounds):
                status, elapsed = timed_post(url, body)
                statuses.add(status)
                seconds.append(elapsed)
            report[name] = {
                "statuses": sorted(statuses),
                "seconds_max": round(max(seconds), 3),
                "budget_seconds": ANSWER_BUDGET_S,
                "within_budget": max(seconds) < ANSWER_BUDGET_S,
            }
    finally:
        silent.close()
    return report


def healthz_during_costly_check(url: str, upstream: FakeUpstream, rounds: int) -> dict:
    upstream.behave(content=COSTLY_ANSWER)
    latencies_ms: list[float] = []
    checks: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(rounds):
            upstream.requests.clear()
            outcome: dict = {}

            def costly(outcome: dict = outcome) -> None:
                outcome["result"] = timed_post(url, schema_request(COSTLY_SCHEMA))

            worker = threading.Thread(target=costly)
            worker.start()
            while not upstream.requests and worker.is_alive():
                time.sleep(0.005)
            while worker.is_alive():
                started = time.perf_counter()
                client.get("/healthz")
                latencies_ms.append((time.perf_counter() - started) * 1000)
                time.sleep(0.02)
            worker.join()
            checks.append(outcome["result"][1])
    p90 = statistics.quantiles(latencies_ms, n=10)[-1] if len(latencies_ms) > 1 else float("nan")
    return {
        "costly_check_seconds": [round(s, 2) for s in checks],
        "probes": len(latencies_ms),
        "healthz_ms_median": round(statistics.median(latencies_ms), 1),
        "healthz_ms_p90": round(p90, 1),
        "healthz_ms_max": round(max(latencies_ms), 1),
        "budget_p90_ms": HEALTHZ_P90_BUDGET_MS,
        "within_budget": p90 < HEALTHZ_P90_BUDGET_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    upstream = FakeUpstream()
    upstream.start()
    port = _free_port()
    with tempfile.TemporaryDirectory() as folder:
        env = {
            **os.environ,
            "ENV_FILE": "/dev/null",
            "API_KEY": API_KEY,
            "TEXT_MODEL__BASE_URL": upstream.url,
            "TEXT_MODEL__MODEL_NAME": "bench-llm",
            "DATABASE__SQLITE_PATH": str(Path(folder) / "bench.sqlite3"),
            "SERVER__PID_FILE": str(Path(folder) / "bench.pid"),
            "API_KEYS__PEPPER": "bench-pepper",
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
                "cpus": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "hostile_answers": hostile_answers(url, upstream, rounds),
                "healthz_during_costly_check": healthz_during_costly_check(url, upstream, rounds),
            }
            print(json.dumps(report, indent=2))
        finally:
            gateway.terminate()
            gateway.wait()
            upstream.stop()


if __name__ == "__main__":
    main()
