"""`manage.py serve`: the worker supervisor stops listening the moment a drain starts, and
gives each worker the configured time to answer its health check."""

from __future__ import annotations

import signal
import socket

import uvicorn
from uvicorn.supervisors.multiprocess import SIGNALS

from server.management.commands.serve import Command, DrainingMultiprocess


def test_sigterm_closes_the_supervisors_listening_socket_at_once():
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        config = uvicorn.Config("llmapi.asgi:application", workers=2)
        supervisor = DrainingMultiprocess(config, sockets=[listener])
        assert signal.getsignal(signal.SIGTERM) == supervisor._on_stop_signal
        supervisor._on_stop_signal(signal.SIGTERM, None)
        assert listener.fileno() == -1
        assert supervisor.signal_queue == [signal.SIGTERM]  # uvicorn still runs its own handler
        with socket.socket() as client:
            assert client.connect_ex(("127.0.0.1", port)) != 0  # refused, not queued
    finally:
        listener.close()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_a_worker_gets_the_configured_time_to_answer_the_health_check(settings, monkeypatch):
    """uvicorn's own 5 s included a new worker's start: on a busy machine each one was killed."""
    settings.SERVER_WORKER_HEALTHCHECK_TIMEOUT = 45
    supervised: list[uvicorn.Config] = []
    monkeypatch.setattr(DrainingMultiprocess, "__init__", lambda self, config, sockets: None)
    monkeypatch.setattr(DrainingMultiprocess, "run", lambda self: None)
    monkeypatch.setattr(uvicorn.Config, "bind_socket", lambda config: supervised.append(config))
    Command()._serve(host="127.0.0.1", port=0, workers=2, access_log=False)
    assert [config.timeout_worker_healthcheck for config in supervised] == [45]


class UnansweringWorker:
    """A worker that misses its health check while a SIGTERM reaches the supervisor."""

    pid = 4_000_000
    exitcode = -signal.SIGKILL

    def __init__(self, supervisor: DrainingMultiprocess) -> None:
        self.supervisor = supervisor
        self.killed = False

    def is_alive(self, timeout: float) -> bool:
        self.supervisor._on_stop_signal(signal.SIGTERM, None)
        return False

    def kill(self) -> None:
        self.killed = True

    def join(self) -> None:
        pass


def test_a_stop_signal_during_a_health_check_starts_no_replacement():
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        supervisor = DrainingMultiprocess(
            uvicorn.Config("llmapi.asgi:application", workers=2), sockets=[listener]
        )
        worker = UnansweringWorker(supervisor)
        supervisor.processes = [worker]
        supervisor.keep_subprocess_alive()  # no replacement handed the closed socket
        assert worker.killed and supervisor.processes == [worker]
        supervisor.keep_subprocess_alive()  # stopping: not even checked again
        assert supervisor.signal_queue == [signal.SIGTERM]
    finally:
        listener.close()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
