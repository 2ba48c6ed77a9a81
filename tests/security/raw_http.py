"""Raw-socket HTTP for the attack tests (requests no HTTP client would send), and `serve` processes of their own."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import API_KEY, ROOT
from tests.fake_upstream import _free_port, wait_for_http
from tests.processes import kill_tree


def connect(url: str, *, timeout: float = 10) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the timeout)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def status_of(raw: bytes) -> int | None:
    if not raw.startswith(b"HTTP/1."):
        return None
    return int(raw.split(b" ", 2)[1])


def raw_request(url: str, request: bytes, *, timeout: float = 10) -> bytes:
    with connect(url, timeout=timeout) as sock:
        sock.sendall(request)
        return read_response(sock)


def start_serve(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen, str]:
    """`manage.py serve` in a process of the test's own (for signals and worker counts)."""
    port = _free_port()
    full_env = {
        "ENV_FILE": "/dev/null",
        "API_KEY": API_KEY,
        "PATH": "/usr/bin:/bin",
        "DATABASE__SQLITE_PATH": str(tmp_path / f"serve-{port}.sqlite3"),
        "SERVER__PID_FILE": str(tmp_path / f"serve-{port}.pid"),
        "API_KEYS__PEPPER": "test-pepper",
        **env,
    }
    log = (tmp_path / f"serve-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), *args],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=log,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", process=process, log=log)
    except RuntimeError:
        kill_tree(process)  # its workers too, or they outlive it
        raise
    return process, url


def serve_log(tmp_path: Path, url: str) -> str:
    port = urlsplit(url).port
    return (tmp_path / f"serve-{port}.log").read_text(errors="replace")


def wait_closed(process: subprocess.Popen, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is None:
        kill_tree(process)
    return process.wait()
