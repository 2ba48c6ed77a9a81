"""
Teams, database keys, quotas and the usage ledger, against a real gateway process: keys are
made with `manage.py create_api_key` on the gateway's own database, and the ledger is read
back from it with SQLite.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import ROOT
from tests.waiting import room_in_the_minute

CACHE_SECONDS = 0.5


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    return tmp_path_factory.mktemp("teams") / "gateway.sqlite3"


def manage(database, *args: str, env: dict[str, str] | None = None) -> str:
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "DATABASE__SQLITE_PATH": str(database),
        "API_KEYS__PEPPER": "test-pepper",
        **(env or {}),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def teams_gateway(gateways, upstream, database):
    return gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
        DATABASE__SQLITE_PATH=str(database),
        API_KEYS__CACHE_SECONDS=str(CACHE_SECONDS),
        USAGE__FLUSH_INTERVAL="0.2",
    )


def ask(url: str, key: str, **body):
    return httpx.post(
        f"{url}/text_model/chat/completion",
        headers={"X-API-Key": key},
        json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, **body},
        timeout=30,
    )


def ledger_rows(database, prefix: str) -> list[tuple]:
    with sqlite3.connect(database) as db:
        table = "usage_usagerecord"
        return db.execute(
            f"SELECT endpoint, status, prompt_tokens, completion_tokens, replica FROM {table} "  # noqa: S608
            "WHERE key_prefix = ? ORDER BY id",
            (prefix,),
        ).fetchall()


def prefix_of(key: str) -> str:
    return key.split("_")[1]


def wait_for(condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_database_key_works_on_the_seed_api_and_v1(teams_gateway, database):
    key = manage(database, "create_api_key", "--team", "research", "--name", "ci")
    assert ask(teams_gateway.url, key).status_code == 200
    v1 = httpx.post(
        f"{teams_gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "fake-llm", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert v1.status_code == 200, v1.text
    # The contract stands for everyone else.
    missing = httpx.post(f"{teams_gateway.url}/text_model/chat/completion", json={})
    assert missing.status_code == 401
    assert missing.json() == {"detail": "Missing API Key. Please provide X-API-Key header."}
    wrong = ask(teams_gateway.url, "llm_abcdefgh_wrong")
    assert (wrong.status_code, wrong.json()) == (403, {"detail": "Invalid API Key"})


def test_revoked_key_stops_within_the_cache_period(teams_gateway, database):
    key = manage(database, "create_api_key", "--team", "research", "--name", "revoked")
    assert ask(teams_gateway.url, key).status_code == 200
    manage(database, "revoke_api_key", key)
    time.sleep(CACHE_SECONDS + 0.2)
    refused = ask(teams_gateway.url, key)
    assert (refused.status_code, refused.json()) == (403, {"detail": "Invalid API Key"})


def test_rate_limited_key_gets_429_with_retry_after_and_ratelimit_headers(teams_gateway, database):
    key = manage(
        database,
        "create_api_key",
        "--team",
        "quota",
        "--name",
        "rpm2",
        "--requests-per-minute",
        "2",
    )
    room_in_the_minute()  # the requests below count in one minute
    first = ask(teams_gateway.url, key)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert ask(teams_gateway.url, key).status_code == 200
    third = ask(teams_gateway.url, key)
    assert third.status_code == 429
    assert int(third.headers["Retry-After"]) >= 1
    for name in ("limit-requests", "remaining-requests", "reset-requests"):
        assert f"x-ratelimit-{name}" in third.headers
    # The refusal is in the ledger too.
    rows = wait_for(lambda: len(ledger_rows(database, prefix_of(key))) == 3 or None)
    assert rows, ledger_rows(database, prefix_of(key))
    assert [row[1] for row in ledger_rows(database, prefix_of(key))] == [200, 200, 429]


def test_streamed_tokens_are_settled_into_the_ledger(teams_gateway, database):
    key = manage(database, "create_api_key", "--team", "research", "--name", "stream")
    with httpx.stream(
        "POST",
        f"{teams_gateway.url}/text_model/chat/stream",
        headers={"X-API-Key": key},
        json={"messages": [{"role": "user", "content": "tell me"}], "max_tokens": 20},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        text = response.read().decode()
    assert text
    rows = wait_for(lambda: ledger_rows(database, prefix_of(key)))
    assert len(rows) == 1
    endpoint, status, prompt_tokens, completion_tokens, replica = rows[0]
    assert (endpoint, status) == ("text_model/chat/stream", 200)
    assert prompt_tokens > 0 and completion_tokens > 0
    assert replica.startswith("http://127.0.0.1")


def test_v1_model_outside_the_keys_scope_is_404_and_not_listed(teams_gateway, database):
    key = manage(
        database, "create_api_key", "--team", "research", "--name", "scoped", "--models", "other"
    )
    headers = {"Authorization": f"Bearer {key}"}
    listed = httpx.get(f"{teams_gateway.url}/v1/models", headers=headers, timeout=30)
    assert listed.status_code == 200 and listed.json()["data"] == []
    refused = httpx.post(
        f"{teams_gateway.url}/v1/chat/completions",
        headers=headers,
        json={"model": "fake-llm", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "model_not_found"
    # On the seed API the same key is refused with 403.
    assert ask(teams_gateway.url, key).status_code == 403


def test_ledger_rows_match_requests_after_a_burst_and_sigterm(gateways, upstream, tmp_path):
    database = tmp_path / "burst.sqlite3"
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
        DATABASE__SQLITE_PATH=str(database),
        # Nothing is flushed before shutdown: the rows must come from flush_and_stop.
        USAGE__FLUSH_INTERVAL="600",
    )
    key = manage(database, "create_api_key", "--team", "burst", "--name", "burst")
    statuses = [ask(gateway.url, key).status_code for _ in range(12)]
    assert statuses == [200] * 12
    gateway.process.send_signal(signal.SIGTERM)
    gateway.process.wait(timeout=30)
    assert len(ledger_rows(database, prefix_of(key))) == 12
