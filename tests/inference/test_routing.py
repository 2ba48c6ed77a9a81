"""Placement over a model's replicas: deterministic given the state (prefixes, loads, health)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from inference import routing
from inference.backends.openai_http import ReplicaPool
from inference.routing import PlacementTable, ReplicaLoad, ServerLoad, place, prefix_keys
from limits import redis_client
from tests.models import text_spec

ROOT = Path(__file__).resolve().parents[2]

SERVERS = ("http://a:8000", "http://b:8000", "http://c:8000", "http://d:8000")
SYSTEM = {"role": "system", "content": "You are a careful agent. " * 300}


def conversation(name: str, turns: int) -> list[dict]:
    """The messages of a conversation's turn `turns` (its own system prompt, then the turns)."""
    messages = [{"role": "system", "content": f"You are agent {name}. " * 200}]
    for turn in range(turns):
        if turn:
            messages.append({"role": "assistant", "content": f"answer {turn} of {name}"})
        messages.append({"role": "user", "content": f"step {turn} of {name}"})
    return messages


def pool(*, servers=SERVERS, **changes) -> ReplicaPool:
    return ReplicaPool(text_spec(servers=servers, **changes))


# --- Prefixes ---------------------------------------------------------------------------------


def test_next_turn_contains_the_previous_turns_whole_prompt():
    first = prefix_keys({"messages": conversation("x", 1)})
    second = prefix_keys({"messages": conversation("x", 2)})
    assert first[-1] in second
    assert second[-1] not in first


def test_conversations_with_another_system_prompt_share_no_prefix():
    assert not set(prefix_keys({"messages": conversation("x", 3)})) & set(
        prefix_keys({"messages": conversation("y", 3)})
    )


def test_tool_definitions_are_part_of_the_prefix():
    messages = conversation("x", 1)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert prefix_keys({"messages": messages}) != prefix_keys(
        {"messages": messages, "tools": tools}
    )


def test_long_conversations_keep_the_first_and_last_boundaries():
    keys = prefix_keys({"messages": conversation("x", 40)})
    assert len(keys) == routing.FIRST_BOUNDARIES + routing.LAST_BOUNDARIES
    assert keys[0] == prefix_keys({"messages": conversation("x", 40)[:1]})[0]


def test_a_turn_places_its_first_boundaries_and_its_whole_prompt():
    keys = prefix_keys({"messages": conversation("x", 5)})
    assert routing.recorded_keys(keys) == (keys[0], keys[1], keys[-1])
    assert routing.recorded_keys(keys[:1]) == (keys[0],)


def test_a_legacy_prompt_is_cut_in_blocks_and_other_requests_have_no_prefix():
    prompt = "z" * (routing.PROMPT_BLOCK_CHARS * 2 + 1)
    assert len(prefix_keys({"prompt": prompt})) == 3
    assert prefix_keys({"prompt": [prompt]}) == prefix_keys({"prompt": prompt})
    assert prefix_keys({"input": "embed me"}) == ()
    assert prefix_keys({"messages": [{"content": object()}]}) == ()


# --- The decision -----------------------------------------------------------------------------

LOCATIONS = ["a", "b", "c", "d"]


def test_the_holder_under_the_bound_keeps_the_request():
    assert place(LOCATIONS, [0, 0, 0, 0], anchor="k", holder="c", load_factor=1.25) == (
        2,
        "affinity",
    )
    assert place(LOCATIONS, [2, 1, 2, 1], anchor="k", holder="c", load_factor=1.25)[1] == (
        "affinity"
    )


def test_load_overrides_affinity_past_the_bound():
    # 6 in flight over 4 replicas: the bound is ceil(1.25 * 7 / 4) = 3, and c already has 3.
    index, reason = place(LOCATIONS, [1, 1, 3, 1], anchor="k", holder="c", load_factor=1.25)
    assert reason == "spill" and index != 2
    # Where it spills is fixed by the prefix, not by chance.
    assert place(LOCATIONS, [1, 1, 3, 1], anchor="k", holder="c", load_factor=1.25)[0] == index
    # It goes to the least loaded replica.
    assert place(LOCATIONS, [2, 0, 3, 1], anchor="k", holder="c", load_factor=1.25) == (1, "spill")
    # A looser bound keeps the affinity at the same loads.
    assert place(LOCATIONS, [1, 1, 3, 1], anchor="k", holder="c", load_factor=2.0) == (
        2,
        "affinity",
    )


def test_a_new_prefix_goes_to_the_least_loaded_replica():
    assert place(LOCATIONS, [2, 1, 0, 1], anchor="k", holder=None, load_factor=1.5) == (2, "new")


def test_equal_loads_are_broken_by_the_rendezvous_order_whatever_the_list_order():
    index, reason = place(LOCATIONS, [0, 0, 0, 0], anchor="k", holder=None, load_factor=1.25)
    assert reason == "new"
    shuffled = ["d", "b", "a", "c"]
    other, _ = place(shuffled, [0, 0, 0, 0], anchor="k", holder=None, load_factor=1.25)
    assert shuffled[other] == LOCATIONS[index]


def test_new_prefixes_on_idle_replicas_spread_over_them():
    chosen = [
        place(LOCATIONS, [0] * 4, anchor=f"k{i}", holder=None, load_factor=1.25)[0]
        for i in range(400)
    ]
    assert all(60 < chosen.count(i) < 140 for i in range(4))


def test_a_holder_that_is_not_a_candidate_is_ignored():
    assert place(LOCATIONS, [0] * 4, anchor="k", holder="gone", load_factor=1.25)[1] == "new"


# --- The pool ---------------------------------------------------------------------------------


async def test_the_same_conversation_returns_to_its_replica():
    replicas = pool()
    first = await replicas.choose(prefixes=prefix_keys({"messages": conversation("x", 1)}))
    for turns in range(2, 8):
        keys = prefix_keys({"messages": conversation("x", turns)})
        assert await replicas.choose(prefixes=keys) is first


async def test_conversations_sharing_a_system_prompt_meet_on_its_replica():
    replicas = pool()
    first = await replicas.choose(
        prefixes=prefix_keys({"messages": [SYSTEM, {"role": "user", "content": "one"}]})
    )
    keys = prefix_keys({"messages": [SYSTEM, {"role": "user", "content": "two"}]})
    assert await replicas.choose(prefixes=keys) is first


async def test_a_loaded_replica_loses_new_turns_and_the_conversation_follows():
    replicas = pool()
    home = await replicas.choose(prefixes=prefix_keys({"messages": conversation("x", 1)}))
    home.load.in_flight = 5  # others idle: the bound is ceil(1.5 * 6 / 4) = 3
    moved = await replicas.choose(prefixes=prefix_keys({"messages": conversation("x", 2)}))
    assert moved is not home
    home.load.in_flight = 0
    assert await replicas.choose(prefixes=prefix_keys({"messages": conversation("x", 3)})) is moved


async def test_the_servers_reported_load_counts_while_fresh():
    replicas = pool()
    home = await replicas.choose(prefixes=prefix_keys({"messages": conversation("x", 1)}))
    now = __import__("time").monotonic()
    home.load.observe(ServerLoad(running=4, waiting=4), now)
    moved = await replicas.choose(prefixes=prefix_keys({"messages": conversation("x", 2)}))
    assert moved is not home
    home.load.observe(ServerLoad(running=4, waiting=4), now - 10 * replicas.fresh_for)
    again = await replicas.choose(prefixes=prefix_keys({"messages": conversation("x", 3)}))
    assert again is moved  # the stale reading is ignored, and the conversation stays


async def test_a_failure_voids_the_replicas_placements_at_once():
    replicas = pool()
    homes = {}
    for name in "pqrstuvw":
        keys = prefix_keys({"messages": conversation(name, 1)})
        homes[name] = await replicas.choose(prefixes=keys)
    failing = homes["p"]
    await replicas.failed(failing)  # once: not ejected yet
    assert not replicas.ejected(failing)
    for name, home in homes.items():
        keys = prefix_keys({"messages": conversation(name, 2)})
        holder = await replicas.placements.holder(keys)
        assert holder == (None if home is failing else home.location)


async def test_an_ejected_replicas_conversations_move_and_stay_moved():
    replicas = pool(eject_after=2, eject_seconds=60)
    homes = {
        name: await replicas.choose(prefixes=prefix_keys({"messages": conversation(name, 1)}))
        for name in "pqrstuvw"
    }
    failing = homes["p"]
    await replicas.failed(failing)
    await replicas.failed(failing)
    assert replicas.ejected(failing)
    for name, home in homes.items():
        keys = prefix_keys({"messages": conversation(name, 2)})
        now = await replicas.choose(prefixes=keys)
        assert now is not failing
        if home is not failing:
            assert now is home
    await replicas.succeeded(failing)
    assert not replicas.ejected(failing)
    for name, home in homes.items():
        keys = prefix_keys({"messages": conversation(name, 3)})
        if home is failing:
            assert await replicas.choose(prefixes=keys) is not failing  # no affinity back


async def test_a_retry_avoids_the_replica_that_failed_and_records_the_new_one():
    replicas = pool()
    keys = prefix_keys({"messages": conversation("x", 1)})
    home = await replicas.choose(prefixes=keys)
    other = await replicas.choose(prefixes=keys, avoid=[home])
    assert other is not home
    assert await replicas.choose(prefixes=keys) is other


async def test_least_busy_and_round_robin_ignore_prefixes():
    least = pool(routing="least_busy")
    keys = prefix_keys({"messages": conversation("x", 1)})
    least.replicas[0].load.in_flight = 1
    least.replicas[1].load.in_flight = 1
    least.replicas[3].load.in_flight = 1
    assert await least.choose(prefixes=keys) is least.replicas[2]

    robin = pool(routing="round_robin")
    robin.replicas[0].load.in_flight = 9
    chosen = [await robin.choose(prefixes=keys) for _ in range(8)]
    assert chosen == robin.replicas * 2


def test_prefix_is_the_default_only_with_several_servers():
    assert text_spec(servers=SERVERS).routing_mode == "prefix"
    assert text_spec().routing_mode == "least_busy"
    assert text_spec(servers=SERVERS, routing="round_robin").routing_mode == "round_robin"


# --- Load -------------------------------------------------------------------------------------


def test_a_fresh_reading_adds_what_was_sent_since():
    load = ReplicaLoad(in_flight=1)
    load.observe(ServerLoad(running=3, waiting=2), now=100.0)
    load.in_flight = 3
    assert load.current(101.0, fresh_for=6.0) == 5 + 2
    assert load.current(107.0, fresh_for=6.0) == 3  # stale: the gateway's own count


# --- The placement table ----------------------------------------------------------------------


def test_placements_expire_and_the_table_is_bounded(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(routing.time, "monotonic", lambda: clock[0])
    table = PlacementTable("m", keep_seconds=60, max_entries=3)
    table.record(["k1", "k2"], "a")
    assert table._local_holder(["k1", "k2"]) == "a"
    clock[0] += 61
    assert table._local_holder(["k1", "k2"]) is None
    table.record(["k1", "k2", "k3", "k4"], "b")
    assert len(table._local) == 3 and table._local_holder(["k1"]) is None


def test_a_failure_voids_earlier_placements_only(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(routing.time, "monotonic", lambda: clock[0])
    table = PlacementTable("m")
    table.record(["old"], "a")
    clock[0] += 1
    table.forget("a")
    assert table._local_holder(["old"]) is None
    clock[0] += 1
    table.record(["new"], "a")
    assert table._local_holder(["new", "old"]) == "a"
    assert table._failed_at["a"] < math.inf


# --- Shared through Redis ---------------------------------------------------------------------


async def test_processes_sharing_redis_see_each_others_placements(use_redis):
    here, there = PlacementTable("m"), PlacementTable("m")  # two processes' own tables
    keys = prefix_keys({"messages": conversation("x", 1)})
    here.record(keys, "b")
    await redis_client.flush()
    next_turn = prefix_keys({"messages": conversation("x", 2)})
    assert await there.holder(next_turn) == "b"
    assert there._local_holder(next_turn) is None  # it came from Redis

    there.forget("b")  # a failure seen by the other process
    await redis_client.flush()
    assert await here.holder(next_turn) is None
    here.record(next_turn, "c")
    await redis_client.flush()
    assert await there.holder(next_turn) == "c"


async def test_without_redis_reachable_the_processs_own_placements_answer(use_own_redis):
    table = PlacementTable("m")
    keys = prefix_keys({"messages": conversation("x", 1)})
    table.record(keys, "b")
    await redis_client.flush()
    use_own_redis.stop()
    assert await table.holder(keys) == "b"


def test_two_gateway_processes_sharing_redis_agree(redis_server):
    redis_server.command("FLUSHALL")
    busy = "http://a:8000"
    # Conversations whose rendezvous order starts with the replica only the first process
    # sees busy: alone, each process would place them differently.
    names = [
        name
        for name in (f"c{i}" for i in range(40))
        if routing.rendezvous_order(
            prefix_keys({"messages": conversation(name, 1)})[-1], [busy, *SERVERS[1:]]
        )[0]
        == 0
    ][:4]
    assert names
    first, second = RoutingWorker(redis_server.url), RoutingWorker(redis_server.url)
    try:
        for turns in range(1, 4):
            for name in names:
                messages = conversation(name, turns)
                placed = first.choose(messages, in_flight={busy: 5})
                assert placed != busy
                assert second.choose(messages) == placed
                assert first.choose(messages) == placed
    finally:
        first.stop()
        second.stop()


class RoutingWorker:
    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.inference.routing_worker"],
            cwd=ROOT,
            env={
                **os.environ,
                "ENV_FILE": "/dev/null",
                "DJANGO_SETTINGS_MODULE": "llmapi.settings",
                "REDIS_URL": url,
                "LIMITS__REDIS_KEY_PREFIX": "test",
                "LIMITS__REDIS_CONNECT_TIMEOUT": "2",
                "LIMITS__REDIS_TIMEOUT": "2",
            },
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._read() == {"ready": True}

    def _read(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            raise AssertionError(f"the worker exited: {self.process.stderr.read()[-3000:]}")
        return json.loads(line)

    def choose(self, messages: list[dict], in_flight: dict[str, int] | None = None) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"messages": messages, "in_flight": in_flight or {}}))
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        return self._read()["location"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
