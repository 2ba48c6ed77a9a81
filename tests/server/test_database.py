"""Database work from async code: in a worker thread, its connection closed when it is done."""

import asyncio
import threading

import pytest
from django.core import signals
from django.db import close_old_connections, connections, reset_queries

from infra.database import disconnect_per_request_receivers, in_database_thread


def watched_connection(closed: list) -> None:
    """This thread's connection, opened, with its close() recorded (SQLite's in-memory test
    database ignores close requests, so the call is what can be observed)."""
    wrapper = connections["default"]
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    wrapper.close = lambda: closed.append(threading.get_ident())


@pytest.mark.django_db(transaction=True)
def test_work_runs_in_another_thread_and_its_connection_is_closed_after():
    closed: list[int] = []

    def query():
        watched_connection(closed)
        assert closed == []  # not before the work is done
        return threading.get_ident()

    worker = asyncio.run(in_database_thread(query)())
    assert worker != threading.get_ident()
    assert closed == [worker]


@pytest.mark.django_db(transaction=True)
def test_the_connection_is_closed_when_the_work_fails():
    closed: list[int] = []

    def failing():
        watched_connection(closed)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        asyncio.run(in_database_thread(failing)())
    assert len(closed) == 1


def test_django_per_request_receivers_are_disconnected():
    def receivers(signal):
        return {ref() for _, ref, *_ in signal.receivers}

    # Django's test client reconnects them around its requests; the server never does.
    disconnect_per_request_receivers()
    assert not {close_old_connections, reset_queries} & receivers(signals.request_started)
    assert close_old_connections not in receivers(signals.request_finished)
