"""
How a request gets into Django: the ASGI layers around Django's handler.

Outermost first: lifespan (start-up and shutdown hooks), the body size limit (413 while a body
is read, before it is buffered), static files (the docs' JavaScript and CSS, so /docs works
offline), then Django through `GatewayASGIHandler`.

`GatewayASGIHandler.handle` is a copy of Django 5.2's `ASGIHandler.handle` with the changes its
docstring lists; `tests/server/test_framework_pins.py` fails when Django's original changes, so
an upgrade re-checks the copy.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core import signals
from django.core.exceptions import RequestAborted, SuspiciousOperation
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import response_for_exception
from django.http import Http404, HttpResponseBase, JsonResponse
from django.urls import Resolver404, URLResolver, get_resolver, set_script_prefix
from django.urls.resolvers import ResolverMatch

from infra.runtime import get_runtime
from server.body_limit import BodySizeLimitMiddleware
from server.lifespan import LifespanMiddleware

logger = logging.getLogger(__name__)


class GatewayASGIHandler(ASGIHandler):
    """
    Django's ASGI handler without a `ThreadSensitiveContext` per request.

    That context gives each request its own thread for thread-sensitive sync code, so that
    per-request database connections stay apart. The gateway's request path is async, and the
    places that touch the database do it in a worker thread and release its connections
    themselves (`infra.database`); sync work left over (the admin's views) runs on the shared
    sync thread instead of a thread started and joined for every request.
    """

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        """
        Django 5.2's ASGIHandler.handle, with one change: the response is closed inline
        instead of through `sync_to_async`. Closing runs the request_finished receivers and
        closes the request's files: quick, non-blocking work (Django's database receivers are
        disconnected, see `infra.database`), where the thread hop cost more than the work
        (about 12% of throughput in profiles).
        """
        # Receive the HTTP request body as a stream object.
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        # Request is complete and can be served.
        set_script_prefix(get_script_prefix(scope))
        await signals.request_started.asend(sender=self.__class__, scope=scope)
        # Get the request and check for basic issues.
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return

        async def process_request(request, send):
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                # Client disconnected during send_response (ignore exception).
                pass

            return response

        # Try to catch a disconnect while getting response.
        tasks = [
            # Check the status of these tasks and (optionally) terminate them
            # in this order. The listen_for_disconnect() task goes first
            # because it should not raise unexpected errors that would prevent
            # us from cancelling process_request().
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self.cut_at_shutdown(tasks, body_file, send)
            return
        # Now wait on both tasks (they may have both finished by now).
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    # Ignore client disconnects.
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                # Allow views to handle cancellation.
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    # Task re-raised the CancelledError as expected.
                    pass

        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            response.close()

        body_file.close()

    def resolve_request(self, request):
        """
        Django's, with each fixed route remembered once resolved: requests keep hitting a
        handful of paths, and resolving one walks the URLconf's includes every time. Only a
        match whose route spells the whole path is kept (no parameters, no catch-all), so the
        cache holds at most one entry per fixed route of the URLconf in use.
        """
        if hasattr(request, "urlconf"):
            return super().resolve_request(request)
        key = (get_resolver(), request.path_info)
        fixed_routes = get_runtime().part(RouteCache).fixed_routes
        match = fixed_routes.get(key)
        if match is None:
            match = super().resolve_request(request)
            if not match.args and not match.kwargs and match.route == request.path_info[1:]:
                fixed_routes[key] = match
        request.resolver_match = match
        return match

    async def cut_at_shutdown(self, tasks: list[asyncio.Task], body_file, send) -> None:
        """
        The server cancelled this request: its graceful-shutdown timeout ran out. Django's
        handler would leave the tasks it started running, unawaited ("Task exception was
        never retrieved"). Cancel them with a message the stream framing recognises, so a
        stream ends with an in-band error, and wait for them. A request cut before its answer
        started gets a 503.
        """
        from api.streaming import SHUTDOWN_CANCEL_MESSAGE, SHUTDOWN_DETAIL, StreamAborted

        for task in reversed(tasks):  # the response first, then the disconnect listener
            task.cancel(msg=SHUTDOWN_CANCEL_MESSAGE)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        body_file.close()
        response = results[1]
        if isinstance(response, StreamAborted):
            raise response  # a plain-text stream: the server aborts the transfer
        if isinstance(response, HttpResponseBase):
            response.close()
            return
        await signals.request_finished.asend(sender=self.__class__)
        unavailable = JsonResponse({"detail": SHUTDOWN_DETAIL}, status=503)
        unavailable["Connection"] = "close"
        await self.send_response(unavailable, send)


class RouteCache:
    """The runtime's fixed routes, as resolved (bounded by the URLconf's fixed routes)."""

    SETTINGS = ("ROOT_URLCONF",)

    def __init__(self) -> None:
        # (URL resolver, path) -> the match of a fixed route. A new resolver (another
        # URLconf, or the same after Django cleared its URL caches) starts afresh.
        self.fixed_routes: dict[tuple[URLResolver, str], ResolverMatch] = {}
        # path -> the view class of a fixed route.
        self.views_of_paths: dict[str, type | None] = {}


class GatewayStaticFilesHandler(ASGIStaticFilesHandler):
    """
    Django's static files handler, with a 404 for paths that climb out of the static root
    (`/static/../settings.py`): Django raises SuspiciousFileOperation for them, which its
    handler turns into a 500.
    """

    async def get_response_async(self, request):
        try:
            return await super().get_response_async(request)
        except SuspiciousOperation:
            logger.info("Refused static path %r", request.path)
            return await sync_to_async(response_for_exception, thread_sensitive=False)(
                request, Http404("Not found.")
            )


def body_limit_for_path(path: str) -> tuple[int, str]:
    """
    The most a request to `path` may send, and the setting that says so: what its view
    declares (`body_limit()`, the image endpoints' uploads), else `SERVER__MAX_BODY_BYTES`.
    The server knows no route: it asks the URLconf.
    """
    view = _view_of(path)
    declared = getattr(view, "body_limit", None)
    if declared is not None:
        return declared()
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE, "SERVER__MAX_BODY_BYTES"


def _view_of(path: str) -> type | None:
    views_of_paths = get_runtime().part(RouteCache).views_of_paths
    if path in views_of_paths:
        return views_of_paths[path]
    try:
        match = get_resolver().resolve(path)
    except Resolver404:
        return None
    view = getattr(match.func, "view_class", None)
    if not match.args and not match.kwargs and match.route == path[1:]:
        views_of_paths[path] = view
    return view


def build_application():
    """The whole ASGI application, as `llmapi.asgi` serves it."""
    return LifespanMiddleware(
        BodySizeLimitMiddleware(
            GatewayStaticFilesHandler(GatewayASGIHandler()), limit_for_path=body_limit_for_path
        )
    )
