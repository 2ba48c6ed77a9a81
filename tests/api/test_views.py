"""AsyncApiView's short-cut content negotiation chooses what DRF's full negotiation would."""

import pytest
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from api.views import AsyncApiView


class BothRenderers(AsyncApiView):
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]


class HtmlFirst(AsyncApiView):
    renderer_classes = [BrowsableAPIRenderer, JSONRenderer]


def negotiated(view_class, *, accept: str | None, query: str = "", format_kwarg=None):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    django_request = APIRequestFactory().post(f"/x{query}", **headers)
    view = view_class()
    view.format_kwarg = format_kwarg
    request = Request(django_request)
    renderer, media_type = view.perform_content_negotiation(request)
    full = DefaultContentNegotiation().select_renderer(request, view.get_renderers(), format_kwarg)
    return (type(renderer), media_type), (type(full[0]), full[1])


@pytest.mark.parametrize(
    ("accept", "query", "format_kwarg"),
    [
        (None, "", None),
        ("*/*", "", None),
        ("application/json", "", None),
        ("text/html", "", None),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "", None),
        ("*/*", "?format=api", None),
        ("*/*", "", "api"),
        ("application/json; indent=4", "", None),
    ],
)
@pytest.mark.parametrize("view_class", [BothRenderers, HtmlFirst])
def test_shortcut_agrees_with_drf(view_class, accept, query, format_kwarg):
    shortcut, full = negotiated(view_class, accept=accept, query=query, format_kwarg=format_kwarg)
    assert shortcut == full


def test_a_browser_still_gets_the_browsable_api():
    (renderer, _), _ = negotiated(BothRenderers, accept="text/html")
    assert renderer is BrowsableAPIRenderer


def test_parsers_are_made_once_per_set_of_classes():
    class Other(AsyncApiView):
        parser_classes = [FormParser]

    first, second = BothRenderers().get_parsers(), BothRenderers().get_parsers()
    assert first is second
    assert [type(p) for p in Other().get_parsers()] == [FormParser]
