"""
Request ids: every response carries `X-Request-ID` (the client's own, when it sent a sane one),
and every log line written while serving the request names it. Hosts: a request for a host
not in `ALLOWED_HOSTS` is refused with a 400 that names the setting, before anything else
reads the Host header.
"""

from __future__ import annotations

import logging
import re
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import JsonResponse
from django.middleware.security import SecurityMiddleware

from infra.request_ids import request_id_var

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    async def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        # Django serves each request in a task of its own, so the id set here stays with this
        # request's context, including the streaming of its body after this returns.
        request_id_var.set(request_id)
        response = await self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


# Probes that answer the same whatever the host (nothing in them is built from it): an
# orchestrator's health checks reach a pod by its address, which no ALLOWED_HOSTS names.
HOST_FREE_PATHS = frozenset({"/healthz", "/readyz"})
# Allowed Host headers remembered per worker.
_GOOD_HOSTS_KEPT = 256
# The longest host name quoted back in a refusal.
_QUOTED_HOST_CHARS = 100


class AllowedHostsMiddleware:
    """
    Check the Host header against ALLOWED_HOSTS on every request. Django checks it only when
    something asks for the host (building a URL, a CSRF check), and then answers with its
    own HTML error page; here every request is checked first, and the answer is the API's
    JSON, naming the setting to change.
    """

    async_capable = True
    sync_capable = False

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)
        # Host headers already found allowed: Django's check costs ~10 µs a request, a set
        # lookup well under one. Bounded: a client varying the port cannot grow it.
        self._checked_for: object = None
        self._good_hosts: set[str] = set()

    async def __call__(self, request):
        if request.path in HOST_FREE_PATHS:
            return await self.get_response(request)
        raw = request.META.get("HTTP_HOST", "")
        allowed = settings.ALLOWED_HOSTS
        if self._checked_for is not allowed:  # the setting changed (tests): forget
            self._checked_for, self._good_hosts = allowed, set()
        if raw and raw in self._good_hosts:
            return await self.get_response(request)
        try:
            request.get_host()
        except DisallowedHost:
            host = request.META.get("HTTP_HOST") or request.META.get("SERVER_NAME", "")
            shown = "".join(c if c.isprintable() else "?" for c in host[:_QUOTED_HOST_CHARS])
            return JsonResponse(
                {
                    "detail": f"This server does not answer to the host {shown!r}: "
                    "add it to the ALLOWED_HOSTS setting to serve it."
                },
                status=400,
            )
        if raw and len(self._good_hosts) < _GOOD_HOSTS_KEPT:
            self._good_hosts.add(raw)
        return await self.get_response(request)


class AsyncSecurityMiddleware(SecurityMiddleware):
    """
    Django's SecurityMiddleware (nosniff, referrer and opener policies, optional HTTPS
    redirect and HSTS), run on the event loop. Its hooks only read settings and set headers;
    the generic async adapter would run each in a thread, two thread hops per request.
    """

    async def __acall__(self, request):
        response = self.process_request(request)
        if response is None:
            response = await self.get_response(request)
        return self.process_response(request, response)


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True
