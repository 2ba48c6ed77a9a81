"""
The base of every API view: DRF's APIView, dispatched on the event loop.
"""

from __future__ import annotations

import inspect
import json

from django.http import HttpResponse
from django.template.response import SimpleTemplateResponse
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import (
    BearerOrApiKeyAuthentication,
    StaffSessionAuthentication,
    prepare_authentication,
)
from gateway import calls
from observability import timing


class AsyncApiView(APIView):
    """
    DRF's APIView, dispatched natively on the event loop.

    Authentication, permissions, parsing, the exception handler and rendering are DRF's own;
    only the handler call is awaited. Nothing in DRF's request cycle here touches a database
    (the API key is looked up first, on the loop, by `prepare_authentication`, which only
    hops to a thread when the key is not cached), so running it on the loop (rather than
    hopping to a thread per request) is safe and fast.
    """

    async def dispatch(self, request, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            await prepare_authentication(request)
            self.initial(request, *args, **kwargs)
            timing.annotate_principal(request.user)  # team and key for metrics and the log
            method = request.method.lower()
            if method in self.http_method_names:
                handler = getattr(self, method, self.http_method_not_allowed)
            else:
                handler = self.http_method_not_allowed
            response = handler(request, *args, **kwargs)
            if inspect.isawaitable(response):
                response = await response
        except Exception as exc:  # noqa: BLE001 (DRF's handler decides what each one means)
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return rendered(self.response)

    def answer(self, data: dict, headers: dict[str, str]) -> HttpResponse:
        """
        A 200 with `data` (plain JSON types). For a JSON client it is encoded here, exactly as
        DRF's JSONRenderer would (compact, UTF-8, no NaN), without building a template response
        to copy; the browsable API still gets DRF's rendering.
        """
        if type(getattr(self.request, "accepted_renderer", None)) is not JSONRenderer:
            return Response(data, headers=headers)
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        response = HttpResponse(body.encode(), content_type="application/json", headers=headers)
        response["Content-Length"] = str(len(response.content))
        return response

    def get_parsers(self):
        """DRF's parsers, made once per set of parser classes: they keep no per-request state."""
        key = tuple(self.parser_classes)
        parsers = _PARSERS.get(key)
        if parsers is None:
            parsers = _PARSERS[key] = super().get_parsers()
        return parsers

    def perform_content_negotiation(self, request, force=False):
        """
        DRF's negotiation, short-cut for what API clients send: no Accept header, `*/*` or
        `application/json`, and no query string or suffix that could name a format. DRF then
        picks the first renderer when it renders JSON, which is what this returns without
        parsing the header and the query string (a few percent of a request's CPU).
        """
        renderers = self.get_renderers()
        first = renderers[0]
        if (
            first.media_type == "application/json"
            and request.META.get("HTTP_ACCEPT", "*/*") in PLAIN_ACCEPTS
            and not request.META.get("QUERY_STRING")
            and not self.format_kwarg
        ):
            return first, first.media_type
        return super().perform_content_negotiation(request, force)


class SdkApiView(AsyncApiView):
    """
    A view that client SDKs call (OpenAI's, Anthropic's): a key as a bearer token or in a
    header (or a staff session), JSON only. Each family sets its own exception handler, which
    gives errors in its SDK's shape.
    """

    authentication_classes = [StaffSessionAuthentication, BearerOrApiKeyAuthentication]
    renderer_classes = [JSONRenderer]

    def get_authenticate_header(self, request):
        # A 401 here asks for a bearer token (the staff session class comes first in the list).
        return BearerOrApiKeyAuthentication().authenticate_header(request)


PLAIN_ACCEPTS = frozenset({"*/*", "application/json", ""})
_PARSERS: dict[tuple[type, ...], list] = {}


def rendered(response):
    """
    Render a DRF Response here, on the event loop, and hand Django a plain HttpResponse.
    Django renders a template response through `sync_to_async`, a thread hop per request that
    costs more than the rendering itself (a few microseconds of JSON encoding).
    """
    if not isinstance(response, SimpleTemplateResponse):
        return response
    response.render()
    content = response.content
    plain = HttpResponse(content, status=response.status_code)
    plain["Content-Length"] = str(len(content))
    for header, value in response.items():
        plain[header] = value
    plain.cookies = response.cookies
    return plain


class FirstRendererNegotiation(DefaultContentNegotiation):
    """Stream endpoints choose their framing from Accept themselves; errors are always JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        renderer = renderers[0]
        return renderer, renderer.media_type


def validated(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def answered_headers(
    answer: calls.ChatResult | calls.ChatStream | calls.PassthroughResult,
) -> dict[str, str]:
    """Which catalog model answered, and which one was asked for when a fallback answered."""
    headers = {"X-LLMAPI-Model": answer.answered_by}
    if answer.fallback_from:
        headers["X-LLMAPI-Fallback-From"] = answer.fallback_from
    return headers
