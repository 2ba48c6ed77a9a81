"""
Serves `tests.observability.metrics_app` with two uvicorn workers sharing one fresh
multiprocess directory, as `manage.py serve --workers 2` does.

    python -m tests.observability.two_worker_server --port 8123
"""

from __future__ import annotations

import argparse

import uvicorn

from observability.multiprocess import prepare_multiprocess_dir, remove_multiprocess_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    directory = prepare_multiprocess_dir()  # before the workers start, so they inherit it
    try:
        uvicorn.run(
            "tests.observability.metrics_app:app",
            host="127.0.0.1",
            port=args.port,
            workers=2,
            log_level="warning",
        )
    finally:
        remove_multiprocess_dir(directory)


if __name__ == "__main__":
    main()
