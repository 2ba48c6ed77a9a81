"""
Sessions and logins for the admin and for staff using the browsable API, at no cost to API
calls.

Django's session, auth and messages middleware are sync: on an async server each hops to a
thread twice per request. Here, requests under `BROWSER_PAGE_PREFIXES` (the admin, the portal
and single sign-on) go through Django's own three (their views are sync anyway, and the pages
get a Content-Security-Policy that keeps them on this server); any other request that carries a session cookie gets its user
resolved with the async ORM (for `StaffSessionAuthentication`); everything else passes
straight through.
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from axes.middleware import AxesMiddleware
from django.conf import settings
from django.contrib.auth import aget_user
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware

from infra.database import release_stale_connections

# The admin's pages load nothing from another origin (the usage charts are inline SVG).
ADMIN_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'"
)


class AdminSessionMiddleware:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)
        # The stubs type a middleware's get_response as plain sync or async; Django's own
        # middleware are both (sync_capable and async_capable), which is what chaining needs.
        # axes' middleware turns a locked-out login into its 429 (accounts/login_limits.py).
        self.admin_chain = SessionMiddleware(
            AuthenticationMiddleware(
                MessageMiddleware(AxesMiddleware(get_response))  # type: ignore[arg-type]
            )
        )
        self.session_engine = SessionMiddleware(get_response).SessionStore

    async def __call__(self, request):
        if request.path.startswith(settings.BROWSER_PAGE_PREFIXES):
            try:
                response = await self.admin_chain(request)
            finally:
                await release_stale_connections()
            response.setdefault("Content-Security-Policy", ADMIN_CSP)
            return response
        session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if session_key:
            session = getattr(request, "session", None)
            if session is None or session.session_key != session_key:
                request.session = self.session_engine(session_key)
            try:
                request.user = await aget_user(request)
            finally:
                await release_stale_connections()
        return await self.get_response(request)
