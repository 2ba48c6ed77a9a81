"""
How the embedded model behaves on the README's own examples, through a real gateway:
determinism across requests, the product-review json_schema (without repair), the story at
default settings, four simultaneous requests, and the worker's memory.

    .venv/bin/python bench/local_model_behaviour.py [NAME=VALUE ...]   # extra environment

Writes bench/results/local-model-behaviour.json.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import rss_kib, wait_for_port  # noqa: E402

REVIEW_SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string"},
    },
    "required": ["sentiment", "rating", "summary"],
}
README_REQUESTS = [
    {
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0.7,
        "max_tokens": 100,
    },
    {"messages": [{"role": "user", "content": "Tell me a short story"}], "temperature": 0.8},
    {"messages": [{"role": "user", "content": "Calculate 2+2"}], "temperature": 0.0, "seed": 42},
    {
        "messages": [{"role": "user", "content": "Write a creative story"}],
        "temperature": 1.5,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.6,
    },
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chat(text: str, **params) -> dict:
    return {"messages": [{"role": "user", "content": text}], **params}


def determinism(client: httpx.Client) -> dict:
    def ask(text: str) -> dict:
        return client.post(
            "/text_model/chat/completion", json=chat(text, temperature=0, max_tokens=30)
        ).json()

    answers = [
        ask("Name a color"),
        ask("Write a haiku about rain"),
        ask("Name a color"),
        ask("Name a color"),
    ]
    colors = [answers[i] for i in (0, 2, 3)]
    return {
        "same_answer": len({a["response"] for a in colors}) == 1,
        "prompt_tokens": [a["usage"]["prompt_tokens"] for a in colors],
    }


def review_schema(client: httpx.Client) -> dict:
    tries = []
    for seed in range(5):
        body = {
            "messages": [{"role": "user", "content": "Analyze this product review"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "product_review", "schema": REVIEW_SCHEMA},
            },
            "temperature": 0.7 if seed else 0.0,
            "seed": seed,
        }
        started = time.perf_counter()
        response = client.post("/text_model/chat/completion", json=body)
        elapsed = time.perf_counter() - started
        valid = False
        if response.status_code == 200:
            try:
                jsonschema.validate(json.loads(response.json()["response"]), REVIEW_SCHEMA)
                valid = True
            except (ValueError, jsonschema.ValidationError):
                pass
        tries.append(
            {
                "seed": seed,
                "status": response.status_code,
                "valid": valid,
                "seconds": round(elapsed, 2),
                "output": response.json().get("response") or response.json().get("output"),
            }
        )
    return {"valid": sum(t["valid"] for t in tries), "of": len(tries), "tries": tries}


def story(client: httpx.Client, temperature: float | None) -> dict:
    body = chat("Tell me a short story")
    if temperature is not None:
        body["temperature"] = temperature
    started = time.perf_counter()
    answer = client.post("/text_model/chat/completion", json=body).json()
    lines = [line.strip() for line in answer["response"].splitlines() if line.strip()]
    return {
        "temperature": temperature,
        "seconds": round(time.perf_counter() - started, 2),
        "finish_reason": answer["finish_reason"],
        "completion_tokens": answer["usage"]["completion_tokens"],
        "lines": len(lines),
        "distinct_lines": len(set(lines)),
        "most_repeated_line": max(Counter(lines).values()) if lines else 0,
    }


def four_at_once(url: str) -> list[dict]:
    started = time.perf_counter()

    def send(index: int) -> dict:
        time.sleep(0.2 * index)
        with httpx.Client(base_url=url, headers={"X-API-Key": "bench"}, timeout=600) as client:
            response = client.post("/text_model/chat/completion", json=README_REQUESTS[index])
        body = response.json()
        return {
            "request": index,
            "status": response.status_code,
            "finished_at_s": round(time.perf_counter() - started, 2),
            "completion_tokens": (body.get("usage") or {}).get("completion_tokens"),
        }

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(send, range(4)))


def main() -> None:
    extra = dict(arg.split("=", 1) for arg in sys.argv[1:])
    port = free_port()
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "API_KEY": "bench",
        "LOG_LEVEL": "WARNING",
        "TEXT_MODEL__JSON_RETRIES": "0",
        **extra,
    }
    env.pop("TEXT_MODEL__BASE_URL", None)
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, server)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, headers={"X-API-Key": "bench"}, timeout=600) as client:
            result = {
                "environment": extra,
                "determinism": determinism(client),
                "review_schema": review_schema(client),
                "story_default": story(client, None),
                "story_readme": story(client, 0.8),
                "four_at_once": four_at_once(url),
                "worker_rss_mib": round(rss_kib(server.pid) / 1024),
            }
    finally:
        server.terminate()
        server.wait()
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "local-model-behaviour.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
