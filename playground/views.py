"""
The HTML pages: the playground, and the docs' ReDoc bundle with a local logo. Every page is
served with a Content-Security-Policy that keeps it on this server.
"""

from __future__ import annotations

import functools
from http import HTTPStatus
from pathlib import Path

from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.templatetags.static import static

from infra.content_security import OFFLINE_PAGE_CSP


def offline_page(view):
    """
    Serve a page with a Content-Security-Policy that keeps it on this server. OPTIONS gets the
    allowed methods: DRF would answer it with metadata that the page's HTML renderer cannot
    render (a 500).
    """

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.method == "OPTIONS":
            response = HttpResponse(status=HTTPStatus.OK)
            response["Allow"] = "GET, HEAD, OPTIONS"
        else:
            response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = OFFLINE_PAGE_CSP
        return response

    return wrapped


REDOC_BUNDLE = "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"
# ReDoc's sidebar shows "API docs by Redocly" with a logo its bundle loads from this address,
# with no setting to change it. The page's CSP refuses it (a console error); this server
# serves the bundle with the address pointing at a logo of its own instead.
REDOC_CDN_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_LOCAL_LOGO = "playground/redoc-logo.svg"


@functools.cache
def redoc_bundle_source() -> bytes:
    path = finders.find(REDOC_BUNDLE)
    if not isinstance(path, str):
        raise FileNotFoundError(REDOC_BUNDLE)
    source = Path(path).read_text(encoding="utf-8")
    return source.replace(REDOC_CDN_LOGO, static(REDOC_LOCAL_LOGO)).encode()


def redoc_bundle(request):
    response = HttpResponse(redoc_bundle_source(), content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "public, max-age=3600"
    return response
