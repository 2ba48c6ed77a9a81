"""The gateway's ASGI handler remembers fixed routes once resolved, and nothing else."""

import pytest
from django.test import RequestFactory, override_settings
from django.urls import Resolver404

from infra.runtime import get_runtime
from server import handler
from server.handler import GatewayASGIHandler


def resolve(path: str):
    return GatewayASGIHandler().resolve_request(RequestFactory().post(path))


def test_a_fixed_route_is_resolved_once():
    first = resolve("/text_model/chat/completion")
    assert first.url_name == "text-completion"
    assert resolve("/text_model/chat/completion") is first


def test_routes_with_parameters_and_catch_alls_are_not_kept():
    kept = len(get_runtime().part(handler.RouteCache).fixed_routes)
    assert resolve("/v1/models/some-model").kwargs == {"model": "some-model"}
    assert resolve("/v1/no-such-endpoint").url_name == "openai-404"
    assert len(get_runtime().part(handler.RouteCache).fixed_routes) == kept


def test_another_urlconf_is_resolved_afresh():
    resolve("/text_model/chat/completion")
    with override_settings(ROOT_URLCONF="tests.teams_urls"):
        assert resolve("/whoami").route == "whoami"
        with pytest.raises(Resolver404):
            resolve("/text_model/chat/completion")
