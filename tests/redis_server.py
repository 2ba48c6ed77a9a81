"""
A real, throw-away `redis-server` for tests and benchmarks: a free loopback port, no
persistence, a temporary directory. It can be killed and started again on the same port to
test outages.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.fake_upstream import _free_port

REDIS_SERVER = shutil.which("redis-server")


def wait_until_up(process: subprocess.Popen, name: str, is_up: Callable[[], bool]) -> None:
    """Poll `is_up()` (an OSError means not yet) until it holds; fail if `name` exits or takes 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            if is_up():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{name} did not start within 10 s")


class RedisServer:
    def __init__(self, port: int | None = None, *options: str) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        self.port = port or _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="llmapi-redis-"))
        self.process: subprocess.Popen | None = None
        self.options = list(options)  # more redis-server options (--requirepass, --unixsocket)

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
                *self.options,
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_up(self.process, "redis-server", self._answers_ping)

    def _answers_ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            # Up, whether or not it asks for a password.
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))

    def kill(self) -> None:
        """SIGKILL: connections drop at once, all data is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, *args: str) -> bytes:
        """One command over a raw socket (no client library state involved)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(65536)


class RedisSentinel:
    """
    A throw-away Redis Sentinel (`redis-server --sentinel`, the same Debian package) watching
    `master` as the service `service`, with short timings so that a failover takes seconds.
    """

    def __init__(self, master: RedisServer, service: str = "limits") -> None:
        self.master = master
        self.service = service
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="llmapi-sentinel-"))
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/{db}"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        config = self.dir / "sentinel.conf"  # Sentinel rewrites its file: one of its own
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.dir}",
                    f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1",
                    f"sentinel down-after-milliseconds {self.service} 1000",
                    f"sentinel failover-timeout {self.service} 5000",
                    f"sentinel parallel-syncs {self.service} 1",
                    "loglevel warning",
                    "",
                ]
            )
        )
        self.process = subprocess.Popen(
            [REDIS_SERVER, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_up(
            self.process, "redis-sentinel", lambda: self.master_port() == self.master.port
        )

    def command(self, *args: str) -> bytes:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(65536)

    def master_port(self) -> int:
        """The port of the master this Sentinel names now."""
        reply = self.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        # *2\r\n$9\r\n127.0.0.1\r\n$5\r\n12345\r\n
        return int(reply.split(b"\r\n")[4])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
