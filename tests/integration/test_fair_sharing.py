"""
Fair sharing of a busy model across real gateway processes on one redis-server: the order in
which the model server saw the requests follows the teams, weights and priorities, whichever
gateway each request went through. The model server answers only when the test opens its gate,
so the line is built first and nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
import redis

from limits.flows import FairQueue, Flow
from tests.fake_upstream import FakeUpstream
from tests.integration.test_teams_gateway import manage, wait_for
from tests.redis_server import REDIS_SERVER, RedisServer

CHAT = "/v1/chat/completions"


class GatedUpstream(FakeUpstream):
    """The fake model server, holding each chat completion until the test lets one through."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Semaphore(0)
        self.waiting = 0  # chat completions held at the gate

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == CHAT:
            self.waiting += 1
            await asyncio.to_thread(self.gate.acquire)
            self.waiting -= 1
        await super().__call__(scope, receive, send)

    def seen(self) -> list[str]:
        """The questions the model server answered, in order."""
        return [r.body["messages"][-1]["content"] for r in self.requests if r.path.endswith(CHAT)]


@pytest.fixture(scope="module")
def gated():
    upstream = GatedUpstream()
    upstream.start()
    yield upstream
    upstream.gate.release(1000)
    upstream.stop()


@pytest.fixture(scope="module")
def redis_server():
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (scripts/test installs Debian's redis-server)")
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    return tmp_path_factory.mktemp("fair") / "gateway.sqlite3"


def gateway_env(gated: GatedUpstream, redis_server: RedisServer, database, instance: str):
    return {
        "TEXT_MODEL__BASE_URL": gated.url,
        "TEXT_MODEL__MODEL_NAME": "scarce",
        "TEXT_MODEL__MAX_CONCURRENCY": "1",
        "TEXT_MODEL__QUEUE_TIMEOUT": "120",
        "REDIS_URL": redis_server.url,
        "LIMITS__ON_REDIS_ERROR": "closed",
        "LIMITS__REDIS_TIMEOUT": "2",
        "LIMITS__REDIS_CONNECT_TIMEOUT": "2",
        "DATABASE__SQLITE_PATH": str(database),
        "LLMAPI_TEST_INSTANCE": instance,
        "METRICS__TOKEN": "metrics-token",  # the dashboard's own figures come from the metrics
    }


@pytest.fixture(scope="module")
def pair(gateways, gated, redis_server, database):
    """Two gateways on one Redis, one slot for the model."""
    first = gateways.get(**gateway_env(gated, redis_server, database, "fair-a"))
    second = gateways.get(**gateway_env(gated, redis_server, database, "fair-b"))
    return [first.url, second.url]


@pytest.fixture(scope="module")
def keys(pair, database):
    def key(team: str, *options: str) -> str:
        return manage(database, "create_api_key", "--team", team, "--name", "k", *options)

    return {
        "a": key("team-a"),
        "b": key("team-b"),
        "heavy": key("heavy", "--team-weight", "3"),
        "light": key("light", "--team-weight", "1"),
        "batch": key("mixed", "--priority", "batch"),
        "interactive": key("mixed"),
    }


@pytest.fixture
def fleet(pair, keys, gated, redis_server):
    """The two gateways, an empty line, the model server's gate closed, and the teams' keys."""
    gated.requests.clear()
    gated.gate = threading.Semaphore(0)
    redis_server.command("FLUSHALL")
    return pair, keys, redis.Redis(port=redis_server.port)


def in_line(client: redis.Redis) -> int:
    return sum(int(client.zcard(key)) for key in client.keys("*:line:*"))


class Line:
    """Requests sent one after the other, each once the previous one has joined the line."""

    def __init__(self, urls: list[str], client: redis.Redis, upstream: GatedUpstream) -> None:
        self.urls, self.client, self.upstream = urls, client, upstream
        self.pool = ThreadPoolExecutor(max_workers=32)
        self.sent: list[Future[httpx.Response]] = []

    def send(self, key: str, question: str, headers: dict[str, str] | None = None) -> None:
        url = self.urls[len(self.sent) % len(self.urls)]
        before = in_line(self.client)
        self.sent.append(self.pool.submit(ask, url, key, question, headers or {}))
        if not self.sent[1:]:  # the first takes the slot and waits at the model server's gate
            assert wait_for(lambda: self.upstream.waiting == 1, timeout=30)
        else:
            assert wait_for(lambda: in_line(self.client) == before + 1, timeout=30), question

    def answer_all(self) -> list[int]:
        self.upstream.gate.release(len(self.sent))
        statuses = [future.result(timeout=120).status_code for future in self.sent]
        self.pool.shutdown()
        return statuses


def ask(url: str, key: str, question: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{url}/text_model/chat/completion",
        headers={"X-API-Key": key, **headers},
        json={"messages": [{"role": "user", "content": question}], "max_tokens": 5},
        timeout=120,
    )


def ask_and_forget(url: str, key: str, question: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        ask(url, key, question, {})


def model_order(first: str, arrivals: list[tuple[str, Flow]]) -> list[str]:
    line: FairQueue[str] = FairQueue()
    for question, flow in arrivals:
        line.push(flow, question)
    return [first] + [line.pop() for _ in arrivals]  # type: ignore[misc]


def test_a_lone_question_passes_a_flood_from_another_gateway(fleet, gated):
    urls, keys, client = fleet
    line = Line(urls, client, gated)
    for n in range(6):
        line.send(keys["a"], f"a{n}")
    line.send(keys["b"], "b0")
    assert line.answer_all() == [200] * 7
    # a0 took the free slot. In line, a1 and b0 tie (neither team served from the line yet):
    # the older goes first; then team B, which has had less, before the rest of team A.
    assert gated.seen() == ["a0", "a1", "b0", "a2", "a3", "a4", "a5"]


def test_weights_3_to_1_across_two_gateways(fleet, gated):
    urls, keys, client = fleet
    line = Line(urls, client, gated)
    line.send(keys["heavy"], "blocker")
    arrivals = []
    for n in range(8):
        for team in ("heavy", "light"):
            line.send(keys[team], f"{team}{n}")
            arrivals.append((f"{team}{n}", Flow(team=team, weight=3 if team == "heavy" else 1)))
    assert line.answer_all() == [200] * 17
    seen = gated.seen()
    assert seen == model_order("blocker", arrivals)
    first_eight = seen[1:9]
    assert sum(q.startswith("heavy") for q in first_eight) == 6


def test_batch_waits_for_interactive_and_a_request_may_lower_its_priority(fleet, gated):
    urls, keys, client = fleet
    line = Line(urls, client, gated)
    line.send(keys["batch"], "blocker")
    line.send(keys["batch"], "batch-key")
    # An interactive key may ask for batch, and a batch key cannot ask for interactive.
    line.send(keys["interactive"], "lowered", {"X-LLMAPI-Priority": "batch"})
    line.send(keys["batch"], "batch-key-asking-more", {"X-LLMAPI-Priority": "interactive"})
    line.send(keys["interactive"], "interactive0")
    line.send(keys["interactive"], "interactive1")
    assert line.answer_all() == [200] * 6
    seen = gated.seen()
    assert seen[:3] == ["blocker", "interactive0", "interactive1"]
    assert set(seen[3:]) == {"batch-key", "lowered", "batch-key-asking-more"}


def test_a_waiter_keeps_its_place_when_another_gateway_is_killed(
    fleet, gated, gateways, redis_server, database, keys
):
    urls, _, client = fleet
    doomed = gateways.get(**gateway_env(gated, redis_server, database, "fair-doomed"))
    line = Line(urls, client, gated)
    line.send(keys["a"], "a0")
    line.send(keys["a"], "a1")
    before = in_line(client)
    threading.Thread(
        target=ask_and_forget, args=(doomed.url, keys["a"], "lost"), daemon=True
    ).start()
    assert wait_for(lambda: in_line(client) == before + 1, timeout=30)
    line.send(keys["b"], "b0")
    doomed.process.send_signal(signal.SIGKILL)
    doomed.process.wait(timeout=10)
    line.send(keys["a"], "a2")
    assert line.answer_all() == [200] * 4
    # The dead gateway's waiter left the line; everyone else kept their place.
    assert gated.seen() == ["a0", "a1", "b0", "a2"]


def test_an_unknown_priority_is_refused_naming_the_header(fleet):
    urls, keys, _ = fleet
    response = ask(urls[0], keys["a"], "hi", {"X-LLMAPI-Priority": "urgent"})
    assert response.status_code == 400
    assert "X-LLMAPI-Priority" in response.json()["detail"]


STAFF_PASSWORD = "a-long-password-for-staff"


def staff_session(url: str, database) -> httpx.Client:
    """A staff member logged in to the admin of the gateway at `url`."""
    with contextlib.suppress(subprocess.CalledProcessError):  # made by an earlier call
        manage(
            database,
            "createsuperuser",
            "--noinput",
            "--username",
            "ops",
            "--email",
            "ops@example.com",
            env={"DJANGO_SUPERUSER_PASSWORD": STAFF_PASSWORD},
        )
    client = httpx.Client(base_url=url, follow_redirects=True, timeout=60)
    page = client.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None
    done = client.post(
        "/admin/login/",
        data={
            "csrfmiddlewaretoken": token.group(1),
            "username": "ops",
            "password": STAFF_PASSWORD,
            "next": "/admin/",
        },
    )
    assert done.status_code == 200 and "/admin/login/" not in str(done.url)
    return client


def dashboard_line(client: httpx.Client) -> dict[tuple[str, str], dict[str, str]]:
    """The dashboard's line table: (team, priority) -> its figures, as rendered."""
    page = client.get("/admin/usage/usagehourly/")
    assert page.status_code == 200
    rows = {}
    for team, priority, cells in re.findall(
        r'<tr data-model="[^"]*" data-team="([^"]*)" data-priority="([^"]*)">(.*?)</tr>', page.text
    ):
        rows[(team, priority)] = dict(re.findall(r'<td class="([a-z-]+)">([^<]*)</td>', cells))
    return rows


def test_the_admin_dashboard_shows_the_teams_waiting(fleet, gated, database):
    urls, keys, client = fleet
    staff = [staff_session(url, database) for url in urls]
    line = Line(urls, client, gated)
    for n in range(4):  # a0 takes the slot and is held at the model server; a1-a3 wait
        line.send(keys["a"], f"a{n}")
    line.send(keys["b"], "b0")
    seen = [dashboard_line(each) for each in staff]
    # Every host: the shared line in Redis, the same on both gateways.
    for rows in seen:
        assert rows[("team-a", "interactive")]["waiting-everywhere"] == "3"
        assert rows[("team-b", "interactive")]["waiting-everywhere"] == "1"
    # This server: each gateway counts its own waiters; together, the whole line.
    assert sum(int(rows[("team-a", "interactive")]["waiting"]) for rows in seen) == 3
    assert sum(int(rows[("team-b", "interactive")]["waiting"]) for rows in seen) == 1
    assert line.answer_all() == [200] * 5
    after = [dashboard_line(each) for each in staff]
    assert sum(int(rows[("team-a", "interactive")]["waited"]) for rows in after) >= 4
    assert all(rows[("team-a", "interactive")]["waiting-everywhere"] == "0" for rows in after)
    for each in staff:
        each.close()
