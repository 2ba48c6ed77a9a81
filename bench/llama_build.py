"""
Tokens per second of two llama.cpp builds of llama-cpp-python, e.g. the portable build that
scripts/bootstrap installs against one compiled for this CPU, with the same model, threads and
prompt. Each build lives in its own virtualenv (only llama-cpp-python and its dependencies are
needed there); runs alternate between the two so that other load on the machine hits both alike.

    .venv/bin/python bench/llama_build.py .venv/bin/python /tmp/native-venv/bin/python

Results go to bench/results/llama-build.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = (
    "Write a detailed guide to keeping a small vegetable garden through the year: preparing the "
    "soil in spring, choosing seeds, watering, dealing with pests without chemicals, harvesting, "
    "storing the produce, and getting the beds ready for winter. Use short paragraphs."
)
GENERATE = 128


def measure(model: str, repeats: int, threads: int) -> dict[str, object]:
    """In the build's own interpreter: prompt and generation speed, `repeats` times."""
    import llama_cpp

    llama = llama_cpp.Llama(model_path=model, n_ctx=1024, n_threads=threads, verbose=False)
    prompt = llama.tokenize(PROMPT.encode())
    no_end = {llama.token_eos(): float("-inf")}  # always generate GENERATE tokens
    prompt_rates, gen_rates = [], []
    for _ in range(repeats):
        llama.reset()  # no reuse of the previous run's prompt
        started = time.perf_counter()
        first = None
        tokens = 0
        for _chunk in llama.create_completion(
            PROMPT, max_tokens=GENERATE, temperature=0, logit_bias=no_end, stream=True
        ):
            tokens += 1
            if first is None:
                first = time.perf_counter()
        assert first is not None
        ended = time.perf_counter()
        prompt_rates.append(len(prompt) / (first - started))
        gen_rates.append((tokens - 1) / (ended - first))
    return {
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "prompt_tokens": len(prompt),
        "prompt_tokens_per_s": prompt_rates,
        "generate_tokens_per_s": gen_rates,
    }


def packaged_model() -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    from llama_smoke import PACKAGED_MODEL_FILE, PACKAGED_MODEL_PACKAGE

    spec = importlib.util.find_spec(PACKAGED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{PACKAGED_MODEL_PACKAGE} is not installed here; run scripts/bootstrap")
    return str(Path(next(iter(spec.submodule_search_locations))) / PACKAGED_MODEL_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("pythons", nargs="*", help="the two builds' Python interpreters")
    parser.add_argument("--rounds", type=int, default=5, help="runs per build, alternating")
    parser.add_argument("--repeats", type=int, default=3, help="generations per run")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="inference threads (default: all cores; 1 is steadier on a busy machine)",
    )
    parser.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.repeats, args.threads)))
        return
    if len(args.pythons) != 2:
        parser.error("give two Python interpreters, one per build")
    model = packaged_model()
    runs: dict[str, list[dict[str, object]]] = {python: [] for python in args.pythons}
    for _ in range(args.rounds):
        for python in args.pythons:
            done = subprocess.run(
                [python, __file__, "--worker", model]
                + ["--repeats", str(args.repeats), "--threads", str(args.threads)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[python].append(json.loads(done.stdout))

    def median(python: str, key: str) -> float:
        values = [v for run in runs[python] for v in run[key]]  # type: ignore[attr-defined]
        return round(statistics.median(values), 1)

    result = {
        "threads": args.threads,
        "prompt_tokens": runs[args.pythons[0]][0]["prompt_tokens"],
        "generate_tokens": GENERATE,
        "builds": [
            {
                "python": python,
                "system_info": runs[python][0]["system_info"],
                "prompt_tokens_per_s": median(python, "prompt_tokens_per_s"),
                "generate_tokens_per_s": median(python, "generate_tokens_per_s"),
            }
            for python in args.pythons
        ],
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "llama-build.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
