"""
Another gateway process for the shared-placement tests: `python -m tests.inference.routing_worker`,
configured by the environment (REDIS_URL, LIMITS__*). For each JSON line on stdin,
`{"messages": [...], "in_flight": {"http://a:8000": 3}}`, it sets its own in-flight counts,
chooses a replica of a four-server model and prints `{"location": ...}`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmapi.settings")
os.environ.setdefault("ENV_FILE", "/dev/null")

import django  # noqa: E402

django.setup()

from inference.backends.openai_http import ReplicaPool  # noqa: E402
from inference.catalog import ModelSpec  # noqa: E402
from inference.routing import prefix_keys  # noqa: E402
from limits import redis_client  # noqa: E402

SERVERS = ("http://a:8000", "http://b:8000", "http://c:8000", "http://d:8000")


async def main() -> None:
    pool = ReplicaPool(ModelSpec(name="shared", backend="openai", servers=SERVERS))
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        request = json.loads(line)
        for replica in pool.replicas:
            replica.load.in_flight = request.get("in_flight", {}).get(replica.location, 0)
        chosen = await pool.choose(prefixes=prefix_keys({"messages": request["messages"]}))
        await redis_client.flush()  # the placement is written before the answer is printed
        print(json.dumps({"location": chosen.location}), flush=True)
    await redis_client.close()


if __name__ == "__main__":
    asyncio.run(main())
