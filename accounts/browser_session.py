"""
The browser session and CSRF cookie behind the browsable API's "Log in with API key".

Django's SessionMiddleware and CsrfViewMiddleware, reduced to what the gateway needs: the
session (kept on the server, see `SESSION_ENGINE`; the cookie holds its random id) is
attached to each request and saved when changed, and the CSRF cookie is read and set, so
pages that render `{% csrf_token %}` hand out a token that matches it. CSRF is *checked* only
where a session is used: by the API-key authentication class for session requests (DRF's
`enforce_csrf`) and by `csrf_protect` on the login form. API calls with an `X-API-Key` header
never need a token.

The hooks run on the event loop, where no I/O may block: a request with a session cookie
has its session loaded with the session store's async API (before the view, so the
synchronous `session.get()` of DRF's authentication answers from memory), and a session a
view changed is saved in a thread. A request without the cookie (every program's call)
touches no store at all, and the generic async adapter's two thread hops are never paid.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.csrf import CsrfViewMiddleware


class BrowserSessionMiddleware(SessionMiddleware):
    def __init__(self, get_response) -> None:
        super().__init__(get_response)
        # Only the cookie hooks: the per-view CSRF check is left to DRF and csrf_protect.
        self.csrf_cookie = CsrfViewMiddleware(get_response)

    def process_request(self, request) -> None:
        super().process_request(request)
        self.csrf_cookie.process_request(request)

    def process_response(self, request, response):
        response = self.csrf_cookie.process_response(request, response)
        return super().process_response(request, response)

    def _saves(self, request) -> bool:
        """Whether SessionMiddleware.process_response would write to the session store."""
        session = request.session
        return bool(
            (session.modified or settings.SESSION_SAVE_EVERY_REQUEST) and not session.is_empty()
        )

    async def __acall__(self, request):
        if request.META.get("HTTP_COOKIE"):
            self.process_request(request)  # a lazy session: nothing is read yet
            if settings.SESSION_COOKIE_NAME in request.COOKIES and not request.path.startswith(
                settings.BROWSER_PAGE_PREFIXES  # their own session middleware runs in a thread
            ):
                await request.session.aitems()  # load it now, off the loop's blocking path
            response = await self.get_response(request)
            if self._saves(request):
                return await sync_to_async(self.process_response)(request, response)
            return self.process_response(request, response)
        # A program's call, or a browser's first visit: there is no cookie to read, and only a
        # page that used the session or the CSRF token has one to set. The same outcome as the
        # full hooks, at a third of their cost on every API call.
        request.session = self.SessionStore(None)
        response = await self.get_response(request)
        if request.META.get("CSRF_COOKIE_NEEDS_UPDATE"):
            response = self.csrf_cookie.process_response(request, response)
        if request.session.accessed:
            if self._saves(request):
                return await sync_to_async(super().process_response)(request, response)
            response = super().process_response(request, response)
        return response
