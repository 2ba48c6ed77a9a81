"""
Tokens per second of the embedded model: through the gateway's stream endpoint against calling
llama-cpp-python directly, with the same model file, threads and prompts, in one run.

    .venv/bin/python bench/local_model.py            # (scripts/bench runs it too)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import wait_for_port  # noqa: E402

PROMPTS = [
    "Tell me a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Write a poem about the sea.",
]
MAX_TOKENS = 200
ROUNDS = 3
THREADS = len(os.sched_getaffinity(0))


def direct_tokens_per_second() -> list[float]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmapi.settings")
    os.environ["ENV_FILE"] = "/dev/null"
    import django

    django.setup()
    from llama_cpp import Llama

    from inference.backends.embedded import default_chat_format, resolve_model_path

    path, digest = resolve_model_path()
    llama = Llama(
        model_path=str(path),
        n_ctx=4096,
        n_threads=THREADS,
        chat_format=default_chat_format(digest),
        verbose=False,
    )
    rates = []
    for _ in range(ROUNDS):
        for prompt in PROMPTS:
            started, tokens = time.perf_counter(), 0
            for chunk in llama.create_chat_completion(
                messages=[{"role": "user", "content": prompt}],
                max_tokens=MAX_TOKENS,
                temperature=0.8,
                seed=1,
                repeat_penalty=1.1,
                stream=True,
            ):
                tokens += bool(chunk["choices"] and chunk["choices"][0]["delta"].get("content"))
            rates.append(tokens / (time.perf_counter() - started))
    return rates


def gateway_tokens_per_second() -> list[float]:
    port = 18777
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "API_KEY": "bench",
        "LOG_LEVEL": "WARNING",
        # The same llama.cpp setup as the direct calls: one context of THREADS threads (the
        # gateway's default is one context of one thread per core, for answers written at once).
        "LOCAL_MODEL__CONTEXTS": "1",
        "LOCAL_MODEL__THREADS": str(THREADS),
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
        rates = []
        with httpx.Client(base_url=url, headers={"X-API-Key": "bench"}, timeout=120) as client:
            for _ in range(ROUNDS):
                for prompt in PROMPTS:
                    body = {
                        "messages": [{"role": "user", "content": prompt}],
                        "max_tokens": MAX_TOKENS,
                        "temperature": 0.8,
                        "seed": 1,
                    }
                    started, tokens = time.perf_counter(), 0
                    with client.stream(
                        "POST",
                        "/text_model/chat/stream",
                        json=body,
                        headers={"Accept": "text/event-stream"},
                    ) as response:
                        for line in response.iter_lines():
                            tokens += line.startswith('data: {"delta"')
                    rates.append(tokens / (time.perf_counter() - started))
        return rates
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    direct = statistics.median(direct_tokens_per_second())
    gateway = statistics.median(gateway_tokens_per_second())
    overhead = 1 - gateway / direct
    result = {
        "threads": THREADS,
        "max_tokens": MAX_TOKENS,
        "direct_tokens_per_s": round(direct, 1),
        "gateway_tokens_per_s": round(gateway, 1),
        "overhead_pct": round(100 * overhead, 1),
        "goal_met": overhead < 0.05,
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "local-model.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
