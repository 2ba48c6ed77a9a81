"""`manage.py serve`: the worker supervisor stops listening the moment a drain starts."""

from __future__ import annotations

import signal
import socket

import uvicorn
from uvicorn.supervisors.multiprocess import SIGNALS

from server.management.commands.serve import DrainingMultiprocess


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
