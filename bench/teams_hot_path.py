"""
Per-request cost of API keys, quotas and the usage ledger on the request path:
`prepare_authentication + authenticate + reserve + settle + record`, on one event loop, with
the key's lookup cached (the steady state). Also: the ledger writer's throughput, and how long
a key revoked elsewhere (no signal reaches this process) keeps working.

    .venv/bin/python bench/teams_hot_path.py [--requests 200000]

Uses a throw-away SQLite database in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = Path(tempfile.mkdtemp(prefix="llmapi-bench-"))
os.environ.update(
    {
        "ENV_FILE": "/dev/null",
        "DJANGO_SETTINGS_MODULE": "llmapi.settings",
        "DATABASE__SQLITE_PATH": str(TMP / "bench.sqlite3"),
        "API_KEYS__PEPPER": "bench-pepper",
        "API_KEY": "bench-bootstrap-key",
        "LOG_LEVEL": "WARNING",
    }
)
os.environ.pop("DATABASE_URL", None)

import django  # noqa: E402

django.setup()

from accounts.authentication import ApiKeyAuthentication, prepare_authentication  # noqa: E402
from accounts.database import ensure_database  # noqa: E402
from accounts.models import ApiKey, Team  # noqa: E402
from accounts.services import create_api_key  # noqa: E402
from limits.stores import get_quota_store  # noqa: E402
from usage import ledger  # noqa: E402
from usage.models import UsageRecord  # noqa: E402


class FakeRequest:
    """What the authentication class reads: the headers."""

    def __init__(self, key: str) -> None:
        self.headers = {"X-API-Key": key}


async def hot_path(key: str, requests: int) -> float:
    """Microseconds per request, the whole sequence."""
    auth = ApiKeyAuthentication()
    store = get_quota_store()
    request = FakeRequest(key)
    record = ledger.get_writer().record
    started = time.process_time()
    for _ in range(requests):
        await prepare_authentication(request)
        principal, _ = auth.authenticate(request)
        reservation = await store.reserve(principal.quota, tokens=256)
        await store.settle(reservation, used_tokens=100)
        record(
            principal=principal,
            model="small",
            replica="http://127.0.0.1:8000/v1",
            endpoint="/v1/chat/completions",
            status=200,
            prompt_tokens=60,
            completion_tokens=40,
            latency_ms=12.0,
            ttft_ms=3.0,
            request_id="r",
        )
    return (time.process_time() - started) / requests * 1e6


async def parts(key: str, requests: int) -> dict[str, float]:
    """Microseconds per call, step by step."""
    auth = ApiKeyAuthentication()
    store = get_quota_store()
    request = FakeRequest(key)
    record = ledger.get_writer().record
    timings = {}
    started = time.process_time()
    for _ in range(requests):
        await prepare_authentication(request)
    timings["prepare_authentication"] = time.process_time() - started
    started = time.process_time()
    for _ in range(requests):
        principal, _ = auth.authenticate(request)
    timings["authenticate"] = time.process_time() - started
    reservations = []
    started = time.process_time()
    for _ in range(requests):
        reservations.append(await store.reserve(principal.quota, tokens=256))
    timings["reserve"] = time.process_time() - started
    started = time.process_time()
    for reservation in reservations:
        await store.settle(reservation, used_tokens=100)
    timings["settle"] = time.process_time() - started
    started = time.process_time()
    for _ in range(requests):
        record(principal=principal, model="small", endpoint="/v1/chat/completions", status=200)
    timings["record"] = time.process_time() - started
    return {name: elapsed / requests * 1e6 for name, elapsed in timings.items()}


async def revocation_delay(key: str) -> float:
    auth = ApiKeyAuthentication()
    request = FakeRequest(key)
    await prepare_authentication(request)
    auth.authenticate(request)
    # Revoked by another worker: an UPDATE without this process's signal.
    await asyncio.to_thread(lambda: ApiKey.objects.filter(name="revoked").update(revoked=True))
    revoked = time.monotonic()
    while True:
        await prepare_authentication(request)
        try:
            auth.authenticate(request)
        except Exception:  # noqa: BLE001 (PermissionDenied: the key stopped working)
            return time.monotonic() - revoked
        await asyncio.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    ensure_database()
    team = Team.objects.create(name="bench", requests_per_minute=10**9, tokens_per_day=10**12)
    limited = create_api_key(
        name="limited",
        team=team,
        requests_per_minute=10**9,
        tokens_per_minute=10**12,
        concurrent_requests=10**9,
        tokens_per_day=10**12,
        tokens_per_month=10**13,
    ).full_key
    revoked = create_api_key(name="revoked", team=team).full_key

    writer = ledger.get_writer()
    writer.max_queue = 10 * args.requests + 20_000
    rounds = 5
    print(f"{args.requests} requests per case, best of {rounds} rounds, one event loop, CPU time")
    for label, key in (
        ("database key, key + team quotas", limited),
        ("API_KEY (bootstrap, no quotas)", "bench-bootstrap-key"),
    ):
        asyncio.run(hot_path(key, 5000))  # warm up: the first lookup fills the cache
        best = min(asyncio.run(hot_path(key, args.requests // rounds)) for _ in range(rounds))
        print(f"  {label:36s} {best:6.2f} µs per request")
        steps = [asyncio.run(parts(key, args.requests // rounds)) for _ in range(rounds)]
        for name in steps[0]:
            print(f"    {name:34s} {min(step[name] for step in steps):6.2f} µs")

    queued = len(writer.queue)
    started = time.perf_counter()
    writer.start()
    asyncio.run(ledger.flush_and_stop())
    elapsed = time.perf_counter() - started
    rows = UsageRecord.objects.count()
    print(
        f"ledger: {rows} rows written ({queued} queued) in {elapsed:.2f} s = {rows / elapsed:,.0f} rows/s, dropped {writer.dropped}"
    )

    for _ in range(3):
        ApiKey.objects.filter(name="revoked").update(revoked=False)
        from accounts import selectors

        selectors.forget_all()
        delay = asyncio.run(revocation_delay(revoked))
        print(
            f"revoked elsewhere: refused after {delay:.2f} s (cache period {django.conf.settings.API_KEYS_CACHE_SECONDS} s)"
        )


if __name__ == "__main__":
    main()
