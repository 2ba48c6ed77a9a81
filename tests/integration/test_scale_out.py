"""Two gateway processes sharing one redis-server enforce one MAX_CONCURRENCY and one rpm."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import API_KEY
from tests.integration.test_teams_gateway import manage, wait_for
from tests.redis_server import REDIS_SERVER, RedisServer
from tests.waiting import room_in_the_minute

CAPACITY = 2


@pytest.fixture(scope="module")
def redis_url():
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (scripts/test installs Debian's redis-server)")
    server = RedisServer()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def pair(gateways, upstream, redis_url, tmp_path_factory):
    database = tmp_path_factory.getbasetemp() / "scale-out.sqlite3"
    common = {
        "TEXT_MODEL__BASE_URL": upstream.url,
        "TEXT_MODEL__MODEL_NAME": "fake-llm",
        "TEXT_MODEL__MAX_CONCURRENCY": str(CAPACITY),
        "TEXT_MODEL__QUEUE_TIMEOUT": "30",
        "REDIS_URL": redis_url,
        # Counted or refused, never admitted uncounted, and patient with a busy test machine.
        "LIMITS__ON_REDIS_ERROR": "closed",
        "LIMITS__REDIS_TIMEOUT": "2",
        "LIMITS__REDIS_CONNECT_TIMEOUT": "2",
        "DATABASE__SQLITE_PATH": str(database),
        # Longer than any test: only the published revocation can stop a cached key.
        "API_KEYS__CACHE_SECONDS": "3600",
    }
    first = gateways.get(**common, LLMAPI_TEST_INSTANCE="a")
    second = gateways.get(**common, LLMAPI_TEST_INSTANCE="b")
    return first, second, database


def ask(url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/text_model/chat/completion",
        headers={"X-API-Key": key},
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        timeout=60,
    )


def test_one_max_concurrency_across_both_gateways(pair, upstream):
    first, second, _ = pair
    upstream.behave(delay=0.3)
    peak, watching = 0, True

    def watch() -> None:
        nonlocal peak
        while watching:
            peak = max(peak, upstream.unanswered)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    urls = [first.url, second.url]
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda i: ask(urls[i % 2], API_KEY).status_code, range(12)))
    watching = False
    watcher.join()
    assert statuses == [200] * 12
    assert peak == CAPACITY  # per process it would reach twice that


def test_one_requests_per_minute_across_both_gateways(pair):
    first, second, database = pair
    key = manage(
        database,
        "create_api_key",
        "--team",
        "shared",
        "--name",
        "rpm3",
        "--requests-per-minute",
        "3",
    )
    room_in_the_minute()  # the requests below count in one minute
    statuses = [ask(url, key).status_code for url in (first.url, second.url, first.url)]
    assert statuses == [200, 200, 200]
    refused = ask(second.url, key)
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(refused.headers["Retry-After"]) >= 1


def test_readiness_reports_redis(pair):
    report = httpx.get(f"{pair[0].url}/readyz", timeout=30).json()
    assert report["limits"] == {"redis": "ok", "mode": "closed"}


def test_revocation_reaches_both_gateways_through_redis(pair, redis_url):
    first, second, database = pair
    key = manage(database, "create_api_key", "--team", "shared", "--name", "revoked")
    assert [ask(url, key).status_code for url in (first.url, second.url)] == [200, 200]
    manage(database, "revoke_api_key", key, env={"REDIS_URL": redis_url})

    def both_refuse() -> bool:
        return [ask(url, key).status_code for url in (first.url, second.url)] == [403, 403]

    # The message may land a moment after the command returns; the cached keys would be
    # accepted for an hour without it.
    assert wait_for(both_refuse, timeout=60)
