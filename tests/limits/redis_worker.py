"""
A separate gateway-like process for the multi-process tests of the shared limits:
`python -m tests.limits.redis_worker <mode> [args]`, configured by the environment
(REDIS_URL, LIMITS__*). It reports on stdout, one JSON object per line.

Modes:
- hammer CAPACITY TASKS HOLD_SECONDS: TASKS concurrent holds of RedisSlots("hammer",
  CAPACITY); while holding, a Redis counter of active holders is raised and its maximum kept.
- hold NAME COUNT CAPACITY: hold COUNT slots of RedisSlots(NAME, CAPACITY), say so, then sleep.
- queue CAPACITY: read lines "<name>" from stdin; each starts a waiter of RedisSlots("fifo",
  CAPACITY) that, once admitted, appends its name to the Redis list "admitted" and releases.
- listen: print every revocation received.
- counter LIMIT WINDOW: say it is ready, read "START END" (wall-clock times) from stdin, then
  reserve one unit of a counter as fast as possible between them; print how many were admitted.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmapi.settings")
os.environ.setdefault("ENV_FILE", "/dev/null")

import django  # noqa: E402

django.setup()

from limits import redis_client, redis_counters, redis_events, revocations  # noqa: E402
from limits.redis_slots import RedisSlots  # noqa: E402

_MAX_ACTIVE = """
local v = redis.call('INCR', KEYS[1])
if v > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], v) end
return v
"""


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def hammer(capacity: int, tasks: int, hold_seconds: float) -> None:
    slots = RedisSlots("hammer", capacity)
    r = redis_client.client()
    raise_active = r.register_script(_MAX_ACTIVE)

    async def one() -> None:
        async with slots.hold(queue_timeout=60):
            await raise_active(keys=["active", "max_active"])
            await asyncio.sleep(hold_seconds)
            await r.decr("active")

    await asyncio.gather(*(one() for _ in range(tasks)))
    say(done=tasks)


async def hold(name: str, count: int, capacity: int) -> None:
    slots = RedisSlots(name, capacity)
    stack = []
    for _ in range(count):
        context = slots.hold(queue_timeout=5)
        await context.__aenter__()
        stack.append(context)
    say(held=count)
    await asyncio.sleep(3600)


async def queue(capacity: int) -> None:
    slots = RedisSlots("fifo", capacity)
    r = redis_client.client()
    await redis_events.wait_connected(60)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    waiting = set()

    async def wait(name: str) -> None:
        try:
            async with slots.hold(queue_timeout=30):
                await r.rpush("admitted", name)
        except Exception as exc:
            print(f"waiter {name} failed: {exc!r}", file=sys.stderr, flush=True)
            raise

    while line := (await reader.readline()).decode().strip():
        task = asyncio.create_task(wait(line))
        waiting.add(task)
        task.add_done_callback(waiting.discard)
        say(queued=line)
    await asyncio.gather(*waiting)
    say(done=True)


async def listen() -> None:
    started = asyncio.get_running_loop().time()

    def received(revoked: str) -> None:
        say(revoked=revoked)

    revocations.on_revocation(received)
    await redis_events.wait_connected(60)
    say(listening=True, after=asyncio.get_running_loop().time() - started)
    await asyncio.sleep(3600)


async def counter(limit: int, window: float) -> None:
    spec = redis_counters.Counter("accuracy", limit=limit, window=window)
    await redis_client.client().ping()  # connected before the start
    say(ready=True)
    start, end = map(float, (await asyncio.to_thread(sys.stdin.readline)).split())
    await asyncio.sleep(max(0.0, start - time.time()))
    admitted = refused = 0
    while time.time() < end:
        reservation = await redis_counters.reserve([spec])
        if reservation.admitted:
            admitted += 1
        else:
            refused += 1
    say(admitted=admitted, refused=refused)


async def main(mode: str, args: list[str]) -> None:
    try:
        if mode == "hammer":
            await hammer(int(args[0]), int(args[1]), float(args[2]))
        elif mode == "hold":
            await hold(args[0], int(args[1]), int(args[2]))
        elif mode == "queue":
            await queue(int(args[0]))
        elif mode == "listen":
            await listen()
        elif mode == "counter":
            await counter(int(args[0]), float(args[1]))
        else:
            raise SystemExit(f"unknown mode {mode}")
    finally:
        await redis_events.stop_listener()
        await redis_client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
