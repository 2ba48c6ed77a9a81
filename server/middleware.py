"""
Request ids: every response carries `X-Request-ID` (the client's own, when it sent a sane one),
and every log line written while serving the request names it.
"""

from __future__ import annotations

import logging
import re
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
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
