"""
Shared fixtures: a real gateway under uvicorn and a real fake model server, both on loopback.

The suite leaves nothing behind: servers write their pid files in a temporary folder of the
run, and when the run ends, a var/llmapi.pid written in the checkout, or any process the run
started that is still alive (a gateway, a worker orphaned by its parent, a Redis server), fails
the run by name (the process is killed; `tests.processes`), and so does any file a test wrote in
the checkout's var/ (a database, a key pepper).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import processes
from tests.fake_upstream import FakeUpstream, _free_port, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-key-0123456789"
OTHER_KEY = "rotated-key-abcdef"

# Servers started with this environment write their pid file here, never in the checkout's
# var/. (Their databases and key peppers are each test's own: it passes them. Setting those here
# would change the settings of the pytest runs some tests start.)
RUN_DIR = Path(tempfile.mkdtemp(prefix="llmapi-tests-"))
os.environ["SERVER__PID_FILE"] = str(RUN_DIR / "llmapi.pid")
REPO_VAR = ROOT / "var"


def _stamp(folder: Path) -> dict[str, float]:
    """What the checkout's var/ holds: each file and when it last changed."""
    if not folder.is_dir():
        return {}
    return {path.name: path.stat().st_mtime for path in folder.iterdir()}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database-tests-only",
        action="store_true",
        help="run only the tests that use the database (the run on PostgreSQL)",
    )


# The folders whose files start servers and take long: their files go first (in their random
# order), so that at the end of a run in two processes, short files fill the gaps.
LONG_FOLDERS = {"integration", "security", "server"}


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle and pytest-django's grouping
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--database-tests-only"):
        database = {"db", "transactional_db", "django_db_setup"}
        kept, dropped = [], []
        for item in items:
            uses = database.intersection(getattr(item, "fixturenames", ()))
            (kept if uses or item.get_closest_marker("django_db") else dropped).append(item)
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    items.sort(key=lambda item: item.path.parent.name not in LONG_FOLDERS)


def pytest_configure(config: pytest.Config) -> None:
    processes.adopt_orphans()
    # No implicit event loop in this process. Until an event loop is set, Python 3.11's
    # asyncio.get_event_loop() makes one in the main thread and keeps it, never closed (some
    # client libraries call it from synchronous code). The next asyncio.run() replaced it, and
    # the collector later reported it (an unclosed loop and its two sockets) in whichever
    # test it ran during: a red run that depended on the order. Python 3.14 makes none either.
    asyncio.set_event_loop(None)
    config.stash[_var_stamp] = _stamp(REPO_VAR)


_var_stamp = pytest.StashKey[dict[str, float]]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    problems = []
    leftovers = processes.still_running(grace=15)
    if leftovers:
        problems.append(
            "processes started by the tests were still running at the end (now killed):\n"
            + "\n".join(f"  pid {pid}: {command}" for pid, command in leftovers)
        )
        processes.kill(pid for pid, _ in leftovers)
    before, after = session.config.stash.get(_var_stamp, {}), _stamp(REPO_VAR)
    written = sorted(name for name, changed in after.items() if before.get(name) != changed)
    if written:
        problems.append(f"tests wrote in the checkout's var/: {', '.join(written)}")
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "the run left something behind", red=True, bold=True)
            for problem in problems:
                reporter.write_line(problem, red=True)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test that ran a server in its temporary folder reports the server's log."""
    report = yield
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and isinstance(tmp_path, Path):
        for log in sorted(tmp_path.glob("*.log")):
            report.sections.append(
                (f"Server log {log.name}", log.read_text(errors="replace")[-20_000:])
            )
    return report


@pytest.fixture(autouse=True)
def no_event_loop_left_set():
    """A loop a test (or a library it called) set and left open is closed with the test."""
    yield
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # none set: the usual case
        return
    if not loop.is_running():
        loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture(autouse=True)
def runtime():
    """A fresh runtime for each test: the process's state, with nothing left by the test before."""
    from infra.runtime import get_runtime, install_runtime
    from server.runtime import build_runtime

    previous = get_runtime()
    yield install_runtime(build_runtime())
    install_runtime(previous)


@pytest.fixture(scope="session")
def fake_upstream_server():
    server = FakeUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def second_upstream():
    """Another fake model server (a second replica), started fresh for the test."""
    server = FakeUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(fake_upstream_server: FakeUpstream) -> FakeUpstream:
    """The fake model server, reset to answer normally."""
    fake_upstream_server.reset()
    return fake_upstream_server


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen
    log_path: Path

    def client(self, key: str | None = API_KEY, **kwargs) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


_template: Path | None = None


def migrated_database() -> Path:
    """
    A SQLite database with every migration applied, made once per test process: a gateway
    started on a copy of it skips the migrations (tests/accounts/test_database.py migrates a
    fresh file).
    """
    global _template
    if _template is None:
        path = RUN_DIR / "migrated.sqlite3"
        env = {
            **os.environ,
            "ENV_FILE": "/dev/null",
            "DATABASE__SQLITE_PATH": str(path),
            "API_KEYS__PEPPER": "test-pepper",
        }
        env.pop("DATABASE_URL", None)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=120,
        )
        _template = path
    return _template


_pools: list[GatewayPool] = []


class GatewayPool:
    """
    Starts one gateway process per distinct configuration and reuses it. When a test module
    ends, its gateways stop (`stop_unshared`), but for the ones asked for with `shared=True`
    (the `gateway` fixture's): an idle gateway still costs CPU and memory for the rest of a run.
    """

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self.gateways: dict[tuple, Gateway] = {}
        self.shared: set[tuple] = set()
        _pools.append(self)

    def get(self, *, shared: bool = False, **env: str) -> Gateway:
        key = tuple(sorted(env.items()))
        if shared:
            self.shared.add(key)
        gateway = self.gateways.get(key)
        if gateway is None or gateway.process.poll() is not None:
            gateway = self.gateways[key] = self._start(env)
        return gateway

    def _start(self, env: dict[str, str]) -> Gateway:
        port = _free_port()
        log_path = self.tmp_dir / f"gateway-{port}.log"
        full_env = {
            **os.environ,
            "ENV_FILE": "/dev/null",
            "API_KEY": f"{API_KEY},{OTHER_KEY}",
            "PYTHONUNBUFFERED": "1",
            # Each gateway's database (keys, usage) in the test's temporary folder.
            "DATABASE__SQLITE_PATH": str(self.tmp_dir / f"gateway-{port}.sqlite3"),
            "SERVER__PID_FILE": str(self.tmp_dir / f"gateway-{port}.pid"),
            "API_KEYS__PEPPER": "test-pepper",
            **env,
        }
        database = Path(full_env["DATABASE__SQLITE_PATH"])
        if "DATABASE_URL" not in full_env and not database.exists():
            database.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(migrated_database(), database)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--port", str(port)],
                cwd=ROOT,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        gateway = Gateway(f"http://127.0.0.1:{port}", process, log_path)
        try:
            wait_for_http(f"{gateway.url}/healthz", process=process, log=log_path)
        except RuntimeError:
            processes.kill_tree(process)
            raise
        return gateway

    def stop_all(self) -> None:
        self._stop(list(self.gateways))
        if self in _pools:
            _pools.remove(self)

    def stop_unshared(self) -> None:
        self._stop([key for key in self.gateways if key not in self.shared])

    def _stop(self, keys: list[tuple]) -> None:
        stopping = [self.gateways.pop(key) for key in keys]
        for gateway in stopping:
            if gateway.process.poll() is None:
                gateway.process.send_signal(signal.SIGTERM)
        for gateway in stopping:
            try:
                gateway.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                processes.kill_tree(gateway.process)


@pytest.fixture(scope="module", autouse=True)
def gateways_end_with_their_module():
    """Set up before, so torn down after, the module's own fixtures that hold its gateways."""
    yield
    for pool in list(_pools):
        pool.stop_unshared()


@pytest.fixture(scope="session")
def gateways(tmp_path_factory):
    pool = GatewayPool(tmp_path_factory.mktemp("gateways"))
    yield pool
    pool.stop_all()


@pytest.fixture
def gateway(gateways: GatewayPool, upstream: FakeUpstream) -> Gateway:
    """A gateway whose text and image models are served by the fake upstream."""
    return gateways.get(
        shared=True,
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
        TEXT_MODEL__API_KEY="upstream-secret-token",
        IMAGE_MODEL__BASE_URL=upstream.url + "/v1",
        IMAGE_MODEL__MODEL_NAME="fake-vlm",
    )
