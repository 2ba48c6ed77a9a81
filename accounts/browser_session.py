"""
The browser session and CSRF cookie behind the browsable API's "Log in with API key".

Django's SessionMiddleware and CsrfViewMiddleware, reduced to what the gateway needs: the
session (a signed cookie) is attached to each request and saved when changed, and the CSRF
cookie is read and set, so pages that render `{% csrf_token %}` hand out a token that matches
it. CSRF is *checked* only where a session is used: by the API-key authentication class for
session requests (DRF's `enforce_csrf`) and by `csrf_protect` on the login form. API calls
with an `X-API-Key` header never need a token.

Both middlewares' hooks run on the event loop when the session engine is signed cookies:
loading and saving one is signing and base64, no I/O, and the generic async adapter would
otherwise cost two thread hops on every API request. Any other engine (a database, a cache)
goes through Django's own adapter, in a thread.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.csrf import CsrfViewMiddleware

SIGNED_COOKIES_ENGINE = "django.contrib.sessions.backends.signed_cookies"


class BrowserSessionMiddleware(SessionMiddleware):
    def __init__(self, get_response) -> None:
        super().__init__(get_response)
        # Only the cookie hooks: the per-view CSRF check is left to DRF and csrf_protect.
        self.csrf_cookie = CsrfViewMiddleware(get_response)
        self.runs_on_loop = settings.SESSION_ENGINE == SIGNED_COOKIES_ENGINE

    def process_request(self, request) -> None:
        super().process_request(request)
        self.csrf_cookie.process_request(request)

    def process_response(self, request, response):
        response = self.csrf_cookie.process_response(request, response)
        return super().process_response(request, response)

    async def __acall__(self, request):
        if not self.runs_on_loop:
            return await super().__acall__(request)
        if request.META.get("HTTP_COOKIE"):
            self.process_request(request)
            response = await self.get_response(request)
            return self.process_response(request, response)
        # A program's call, or a browser's first visit: there is no cookie to read, and only a
        # page that used the session or the CSRF token has one to set. The same outcome as the
        # full hooks, at a third of their cost on every API call.
        request.session = self.SessionStore(None)
        response = await self.get_response(request)
        if request.META.get("CSRF_COOKIE_NEEDS_UPDATE"):
            response = self.csrf_cookie.process_response(request, response)
        if request.session.accessed:
            response = super().process_response(request, response)
        return response
