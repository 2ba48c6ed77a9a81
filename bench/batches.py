"""
Batches on idle capacity: does a big batch slow interactive users down, and does it use the
model slots they leave free?

A fake model server (a process of its own) answers every request after a fixed delay; the
gateway in front of it has 4 model slots (`TEXT_MODEL__MAX_CONCURRENCY=4`). A steady
open-loop interactive load (chat requests at a fixed rate, about one slot's worth) runs three
times:

1. alone, for the interactive p50 (and p95) without a batch;
2. while a 2,000-line batch runs through `/v1/batches`, for the interactive p50 with it, and
   the share of the free slot time the batch used: the model server's busy slot-seconds for
   batch lines that answered a line (a call cut short by preemption is counted as lost, not
   used), over the slot-seconds the interactive load left free (4 x the window minus the
   interactive requests' slot-seconds), both counted at the model server over the window in
   which the batch ran;
3. alone again, after the batch: on a shared host the load of other work drifts, so the
   value without the batch is measured on both sides of the batch and the two pooled.

The gateway's CPU time per interactive request and per batch line, and the host's load
average during each phase, are reported beside the figures.

The goals (issue: interactive p50 within 1.2x of its value without the batch; the batch uses at
least 80% of the free slots) are reported as met or missed, with the figures. Batch lines take
the model slots at the `batch` priority: with a scheduler that serves `interactive` first the
p50 holds; with first-come first-served slots it cannot.

How batch work shares the slots follows the gateway's settings, taken from this environment:
by default interactive requests preempt batch lines; `LIMITS__BATCH_PREEMPT=false` measures
the headroom rule instead, into `bench/results/batches-headroom.*`.

    .venv/bin/python bench/batches.py            # 2,000 lines, about 2 minutes
    .venv/bin/python bench/batches.py --quick    # 300 lines
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_upstream import FakeUpstream, _free_port, wait_for_http  # noqa: E402

KEY = "bench-key-0123456789"
SLOTS = 4
DELAY = 0.05  # seconds the model server takes per request
RESULTS = ROOT / "bench" / "results"


class TimedRequests(list):
    """The model server's received requests, with when each arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, request) -> None:
        self.times.append(time.perf_counter())
        super().append(request)

    def clear(self) -> None:
        self.times.clear()
        super().clear()


def _serve_model(port: int, commands: Connection) -> None:
    """The fake model server, in a process of its own; answers `commands` with its arrivals."""
    upstream = FakeUpstream(port)
    upstream.requests = TimedRequests()
    upstream.start()
    upstream.behave(delay=DELAY)
    commands.send("started")
    while (command := commands.recv()) != "stop":
        assert command == "arrivals"
        requests = list(zip(upstream.requests.times, upstream.requests, strict=False))
        commands.send([(at, is_batch(request)) for at, request in requests])
    upstream.stop()


class ModelServer:
    """
    The fake model server in a child process, so that its work does not share this process's
    interpreter with the interactive load being timed. Arrival times are `perf_counter`
    readings (the system's monotonic clock), comparable across the two processes.
    """

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._commands, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("fork").Process(
            target=_serve_model, args=(self.port, child), daemon=True
        )

    def start(self) -> None:
        self._process.start()
        assert self._commands.recv() == "started"

    def arrivals(self) -> list[tuple[float, bool]]:
        """(when, whether a batch line) of every request so far."""
        self._commands.send("arrivals")
        return self._commands.recv()

    def stop(self) -> None:
        self._commands.send("stop")
        self._process.join(timeout=30)


def cpu_seconds(pid: int) -> float:
    """A process's user and system CPU time so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_gateway(
    upstream: ModelServer, folder: Path, concurrency: int
) -> tuple[str, subprocess.Popen]:
    port = _free_port()
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "API_KEY": KEY,
        "API_KEYS__PEPPER": "bench-pepper",
        "DATABASE__SQLITE_PATH": str(folder / "bench.sqlite3"),
        "TEXT_MODEL__BASE_URL": upstream.url,
        "TEXT_MODEL__MODEL_NAME": "fake-llm",
        "TEXT_MODEL__MAX_CONCURRENCY": str(SLOTS),
        "TEXT_MODEL__QUEUE_TIMEOUT": "120",
        "BATCHES__FILES_DIR": str(folder / "files"),
        # By default more lines in flight than slots: a freed slot always has a batch line
        # waiting (`--concurrency` below the slots keeps headroom for interactive requests).
        "BATCHES__CONCURRENCY": str(concurrency),
        "BATCHES__POLL_SECONDS": "0.2",
        "LOG_LEVEL": "WARNING",
    }
    log = (folder / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/healthz", process=process)
    return url, process


async def interactive_load(
    url: str, rate: float, stop: asyncio.Event
) -> list[tuple[float, float, float]]:
    """
    Chat requests at `rate` per second until `stop`; (start, latency, time waiting for a model
    slot by the gateway's `x-llmapi-queue-ms`) of each answered one.
    """
    latencies: list[tuple[float, float, float]] = []
    body = {"model": "fake-llm", "messages": [{"role": "user", "content": "interactive"}]}
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
    ) as client:

        async def one() -> None:
            started = time.perf_counter()
            answer = await client.post("/v1/chat/completions", json=body)
            if answer.status_code == 200:
                queued = float(answer.headers.get("x-llmapi-queue-ms", 0)) / 1000
                latencies.append((started, time.perf_counter() - started, queued))

        tasks = []
        next_at = time.perf_counter()
        while not stop.is_set():
            tasks.append(asyncio.create_task(one()))
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.gather(*tasks)
    return latencies


async def interactive_alone(url: str, rate: float, seconds: float) -> list[tuple[float, float]]:
    """(latency, slot wait) of the interactive load alone for `seconds`."""
    stop = asyncio.Event()
    load = asyncio.create_task(interactive_load(url, rate, stop))
    await asyncio.sleep(seconds)
    stop.set()
    return [(latency, queued) for _, latency, queued in await load]


def batch_file(lines: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"b{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "fake-llm", "messages": [{"role": "user", "content": "batch"}]},
            }
        ).encode()
        + b"\n"
        for i in range(lines)
    )


def is_batch(request) -> bool:
    return request.body["messages"][0]["content"] == "batch"


async def measure(lines: int, rate: float, alone_seconds: float, concurrency: int) -> dict:
    upstream = ModelServer()
    upstream.start()
    folder = Path(tempfile.mkdtemp(prefix="llmapi-bench-batches-"))
    url, process = start_gateway(upstream, folder, concurrency)
    try:
        print("interactive load alone", file=sys.stderr, flush=True)
        # 1. Interactive alone.
        cpu_before = cpu_seconds(process.pid)
        alone = await interactive_alone(url, rate, alone_seconds)
        cpu_alone = cpu_seconds(process.pid) - cpu_before
        load_before = os.getloadavg()[0]

        print("the batch, with the interactive load", file=sys.stderr, flush=True)
        # 2. The batch, with the same interactive load running.
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        uploaded = await client.files.create(
            file=("batch.jsonl", io.BytesIO(batch_file(lines))), purpose="batch"
        )
        stop = asyncio.Event()
        load = asyncio.create_task(interactive_load(url, rate, stop))
        await asyncio.sleep(1.0)  # the load is steady before the batch starts
        cpu_before, sent_before = cpu_seconds(process.pid), len(upstream.arrivals())
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while True:
            batch = await client.batches.retrieve(batch.id)
            if batch.status in ("completed", "failed", "cancelled", "expired"):
                break
            print(f"  {batch.status} {batch.request_counts}", file=sys.stderr, flush=True)
            await asyncio.sleep(1.0)
        cpu_batch_phase = cpu_seconds(process.pid) - cpu_before
        load_during = os.getloadavg()[0]
        interactive_in_phase = sum(
            1 for _, batch_line in upstream.arrivals()[sent_before:] if not batch_line
        )
        stop.set()
        together_all = await load
        await client.close()

        print("interactive load alone, after the batch", file=sys.stderr, flush=True)
        # 3. Interactive alone again.
        after = await interactive_alone(url, rate, alone_seconds)
        load_after = os.getloadavg()[0]
        # The window: from the batch's first line at the model server to its last answer.
        arrivals = upstream.arrivals()
        batch_times = [at for at, batch_line in arrivals if batch_line]
        begin, end = batch_times[0], batch_times[-1] + DELAY
        window = end - begin
        batch_n = len(batch_times)
        interactive_n = sum(
            1 for at, batch_line in arrivals if not batch_line and begin <= at < end
        )
        together_timed = [(lat, queued) for at, lat, queued in together_all if begin <= at < end]
    finally:
        process.terminate()
        process.wait(timeout=30)
        upstream.stop()

    load_average = os.getloadavg()[1]  # over the last 5 minutes: about this run
    cpu_per_interactive = cpu_alone / max(1, len(alone))
    cpu_per_line = (cpu_batch_phase - interactive_in_phase * cpu_per_interactive) / max(1, batch_n)
    free_slot_seconds = SLOTS * window - interactive_n * DELAY
    # Only the calls that answered a line count as used: a line preempted by an interactive
    # request (LIMITS__BATCH_PREEMPT) reached the model server once more, and that call's
    # time (at most DELAY) was lost.
    completed = batch.request_counts.completed if batch.request_counts else batch_n
    useful_n = min(batch_n, completed)
    without = [latency for latency, _ in alone + after]
    together = [latency for latency, _ in together_timed]
    p50_alone = statistics.median(without)
    p50_together = statistics.median(together)
    queued_alone = statistics.median(queued for _, queued in alone + after)
    queued_together = statistics.median(queued for _, queued in together_timed)
    return {
        "lines": lines,
        "load_average_5min": round(load_average, 1),
        "batch_status": batch.status,
        "request_counts": batch.request_counts.model_dump() if batch.request_counts else None,
        "interactive_rate": rate,
        "slots": SLOTS,
        "batch_concurrency": concurrency,
        "preempt": preempting(),
        "model_delay_s": DELAY,
        "window_s": round(window, 2),
        "load_average_1min": {
            "before": round(load_before, 1),
            "during": round(load_during, 1),
            "after": round(load_after, 1),
        },
        "interactive_alone": {
            "n": len(without),
            "p50_ms": round(1000 * p50_alone, 1),
            "p95_ms": round(1000 * statistics.quantiles(without, n=20)[-1], 1),
            "p50_ms_before": round(1000 * statistics.median(lat for lat, _ in alone), 1),
            "p50_ms_after": round(1000 * statistics.median(lat for lat, _ in after), 1),
            "slot_wait_p50_ms": round(1000 * queued_alone, 1),
        },
        "interactive_with_batch": {
            "n": len(together),
            "slot_wait_p50_ms": round(1000 * queued_together, 1),
            "p50_ms": round(1000 * p50_together, 1),
            "p95_ms": round(1000 * statistics.quantiles(together, n=20)[-1], 1),
        },
        "p50_ratio": round(p50_together / p50_alone, 2),
        "batch_lines_at_model_server": batch_n,
        "interactive_requests_in_window": interactive_n,
        "batch_lines_per_s": round(useful_n / window, 1),
        "preempted_calls": batch_n - useful_n,
        "free_slot_share_used": round(useful_n * DELAY / free_slot_seconds, 3),
        "free_slot_share_lost_at_most": round((batch_n - useful_n) * DELAY / free_slot_seconds, 3),
        "gateway_cpu_ms_per_interactive_request": round(1000 * cpu_per_interactive, 2),
        "gateway_cpu_ms_per_batch_line": round(1000 * cpu_per_line, 2),
    }


def preempting() -> bool:
    """Whether the gateway started from this environment preempts batch lines."""
    value = os.environ.get("LIMITS__BATCH_PREEMPT", "").strip().lower()
    return value not in ("false", "off", "no", "0")


def report(result: dict) -> str:
    p50_ok = result["p50_ratio"] <= 1.2
    share_ok = result["free_slot_share_used"] >= 0.8
    loads, alone = result["load_average_1min"], result["interactive_alone"]
    if result["batch_concurrency"] < result["slots"]:
        why_wait = (
            f"the batch holds at most {result['batch_concurrency']} of the {result['slots']} "
            "slots: one is left for them"
        )
    elif result["preempt"]:
        why_wait = "every slot busy: a batch line gives one back, or the first to free is theirs"
    else:
        why_wait = "the headroom keeps a slot free for them while they are present"
    rule = (
        "interactive requests preempt batch lines (`LIMITS__BATCH_PREEMPT`)"
        if result["preempt"]
        else "the headroom rule (`LIMITS__BATCH_PREEMPT=false`)"
    )
    lines = [
        "# Batches on idle capacity"
        + ("" if result["preempt"] else " (LIMITS__BATCH_PREEMPT=false: the headroom rule)"),
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `bench/batches.py` on "
        f"{platform.machine()} ({os.cpu_count()} cores, shared), Python {platform.python_version()}.",
        "",
        f"A fake model server answering each request in {int(DELAY * 1000)} ms behind a gateway "
        f"with {result['slots']} model slots, {result['batch_concurrency']} batch lines in flight "
        f"(`BATCHES__CONCURRENCY`), {rule}; an open-loop interactive load of "
        f"{result['interactive_rate']:g} chat requests/s (about "
        f"{result['interactive_rate'] * DELAY:.1f} slots' worth); a {result['lines']}-line batch "
        f"({result['batch_status']}, {result['request_counts']}). The host's load average "
        f"over the run: {result['load_average_5min']} on {os.cpu_count()} cores (1-minute "
        f"figures before, during and after the batch: {loads['before']}, {loads['during']}, "
        f"{loads['after']}; other work shares the host): compare the interactive p50 without "
        f"the batch with the model server's {int(DELAY * 1000)} ms to see how much the gateway "
        "itself was slowed.",
        "",
        "The window is from the batch's first line at the model server to its last answer; the "
        "interactive figures while the batch runs are the requests sent in that window. The "
        "figures without the batch pool the load's runs before and after it (p50 "
        f"{alone['p50_ms_before']} ms before, {alone['p50_ms_after']} ms after).",
        "",
        "| | interactive requests | p50 | p95 |",
        "|---|---|---|---|",
        f"| without the batch (before and after) | {result['interactive_alone']['n']} | "
        f"{result['interactive_alone']['p50_ms']} ms | {result['interactive_alone']['p95_ms']} ms |",
        f"| while the batch runs | {result['interactive_with_batch']['n']} | "
        f"{result['interactive_with_batch']['p50_ms']} ms | "
        f"{result['interactive_with_batch']['p95_ms']} ms |",
        "",
        f"- Interactive p50 with the batch: **{result['p50_ratio']}x** its value without "
        f"(goal: at most 1.2x): {'met' if p50_ok else 'missed'}.",
        f"- Interactive requests' wait for a model slot (the gateway's `x-llmapi-queue-ms`, "
        f"median): {alone['slot_wait_p50_ms']} ms without the batch, "
        f"{result['interactive_with_batch']['slot_wait_p50_ms']} ms with it ({why_wait}).",
        f"- The batch answered {result['batch_lines_at_model_server'] - result['preempted_calls']} "
        f"lines in {result['window_s']} s ({result['batch_lines_per_s']} lines/s) and used "
        f"**{100 * result['free_slot_share_used']:.0f}%** of the slot time the interactive load "
        f"left free (goal: at least 80%): {'met' if share_ok else 'missed'}.",
        *(
            []
            if not result["preempt"]
            else [
                f"- Interactive requests preempted at least {result['preempted_calls']} batch calls "
                "that reached the model server (`LIMITS__BATCH_PREEMPT`; "
                '`llmapi_batch_lines_total{outcome="preempted"}` counts every one), each run again: '
                f"at most {100 * result['free_slot_share_lost_at_most']:.0f}% of the free slot time was "
                "lost to work cut short (counted above as unused).",
            ]
        ),
        f"- The gateway's CPU: {result['gateway_cpu_ms_per_interactive_request']} ms per "
        f"interactive request, {result['gateway_cpu_ms_per_batch_line']} ms per batch line "
        "(claiming, the call, the result and the ledger row; the batch's creation included).",
        "",
        "Where a batch line's gateway time goes, and what was cut: see "
        "[docs/batches.md](../../docs/batches.md#measured-idle-capacity-and-interactive-latency).",
    ]
    if not p50_ok and result["batch_concurrency"] >= result["slots"]:
        lines += [
            "",
            "Why the interactive p50 grows: with the batch every slot is busy, so an interactive "
            "request waits for the first slot to free (the scheduler gives it that slot before "
            "any batch line waiting for it: `tests/integration/test_batches_sdk.py`), and the "
            "gateway's CPU is shared with the batch's lines (more so on a crowded host).",
        ]
    if not share_ok and not result["preempt"]:
        lines += [
            "",
            "Why the batch used less of the free slot time: while interactive work is present "
            "the headroom keeps a slot free for it, so under a steady interactive load the "
            "batch gets the slots minus the interactive ones minus one.",
        ]
    elif not share_ok:
        lines += [
            "",
            "Why the batch used less of the free slot time: with more lines in flight than "
            "slots, a freed slot always has a batch line waiting at the gateway, so what is "
            "left unused is time the gateway process took to get the next line to the model "
            "server: CPU, which on a crowded host it does not get.",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=20.0, help="interactive requests/s")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4 * SLOTS,
        help="BATCHES__CONCURRENCY (default: 4x the slots; the results file is named after "
        "any other value)",
    )
    args = parser.parse_args()
    lines = 300 if args.quick else 2000
    result = asyncio.run(
        measure(
            lines, args.rate, alone_seconds=5 if args.quick else 15, concurrency=args.concurrency
        )
    )
    RESULTS.mkdir(exist_ok=True)
    name = "batches" if args.concurrency == 4 * SLOTS else f"batches-concurrency-{args.concurrency}"
    if not result["preempt"]:
        name += "-headroom"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = report(result)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
    return 0 if result["p50_ratio"] <= 1.2 and result["free_slot_share_used"] >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
