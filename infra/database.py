"""
Database work from async code.

Django closes a request's stale database connections through its `request_started` and
`request_finished` receivers, in the thread that sends the signals. Under ASGI that costs a
thread hop on every request, and it is the wrong thread: the gateway's request path is async,
and the few places that touch the database do it in a worker thread. So the receivers are
disconnected (`ServerConfig.ready`), and each of those places releases its thread's
connections itself, as these helpers do.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections, reset_queries
from django.db.backends.base.base import BaseDatabaseWrapper

P = ParamSpec("P")
T = TypeVar("T")


def close_connections() -> None:
    """
    Close (or, with PostgreSQL's pool, return) this thread's connections: for a worker thread
    that may not run database work again.
    """
    for connection in _outside_transactions():
        connection.close()


@sync_to_async
def release_stale_connections() -> None:
    """
    In the shared sync thread (the admin's views, the async ORM), what Django's receivers do
    when a request ends: close the connections that are broken or older than
    `CONN_MAX_AGE`, so none outlives a request there.
    """
    for connection in _outside_transactions():
        connection.close_if_unusable_or_obsolete()


def _outside_transactions() -> list[BaseDatabaseWrapper]:
    """This thread's open connections, but those inside a transaction (a test's own)."""
    return [c for c in connections.all(initialized_only=True) if not c.in_atomic_block]


def in_database_thread(func: Callable[P, T]):
    """
    `func` (blocking database work) as a coroutine function run in a worker thread of its own
    (not the shared sync thread where the admin's views run, so a slow admin page never holds
    it up), with the thread's connections closed when it returns.
    """

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        finally:
            close_connections()

    return wraps(func)(sync_to_async(run, thread_sensitive=False))


def disconnect_per_request_receivers() -> None:
    from django.core import signals

    signals.request_started.disconnect(reset_queries)
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
