"""A short soak: mixed traffic against injected upstream faults; nothing lost, nothing leaked."""

import asyncio

import httpx

from tests.conftest import API_KEY, OTHER_KEY
from tests.soak import run_soak
from tests.waiting import wait_until

UPSTREAM_TOKEN = "sk-upstream-soak-secret"


def test_short_soak_with_injected_faults(gateways, upstream):
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="soak",
        TEXT_MODEL__MAX_CONCURRENCY="6",
        TEXT_MODEL__QUEUE_TIMEOUT="0.5",
        TEXT_MODEL__API_KEY=UPSTREAM_TOKEN,
        LOG_LEVEL="DEBUG",  # the most the gateway ever logs
    )
    upstream.behave(chunks=[f"w{i} " for i in range(8)], chunk_interval=0.01, chaos=0.25)
    report = asyncio.run(
        run_soak(
            gateway_url=gateway.url,
            api_key=API_KEY,
            gateway_pid=gateway.process.pid,
            seconds=12,
            min_requests=200,  # enough to see leaks, however slow the machine
        )
    )
    summary = report.as_dict()
    assert report.requests >= 200, summary
    assert report.unexpected == [], summary
    assert 500 not in report.statuses, summary
    assert report.statuses[502] > 0, summary  # the injected faults did happen and were mapped
    assert report.slots_in_use_after == 0, summary  # every concurrency slot is free again
    # No upstream request left open: a cancelled one ends when the server notices the closed
    # connection, which a busy machine may take a while to schedule.
    wait_until(lambda: upstream.active == 0 and upstream.open_streams == 0)
    assert report.rss_growth < 0.10, summary

    # Secrets hygiene over the whole session: logs, readiness report and schema.
    exposed = gateway.log() + httpx.get(f"{gateway.url}/readyz").text
    exposed += httpx.get(f"{gateway.url}/openapi.json").text
    for secret in (API_KEY, OTHER_KEY, UPSTREAM_TOKEN):
        assert secret not in exposed
    assert "Traceback" not in gateway.log()
