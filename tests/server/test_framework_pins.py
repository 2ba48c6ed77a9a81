"""
Three places copy or bypass framework internals for speed. Each is pinned here to the exact
source of the framework code it mirrors: when an upgrade of Django or DRF changes that code,
these tests fail and say which copy to re-check (then update the digest).
"""

from __future__ import annotations

import hashlib
import inspect

import pytest
from django.core.handlers.asgi import ASGIHandler
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

PINS = [
    (
        "django.core.handlers.asgi.ASGIHandler.handle",
        ASGIHandler.handle,
        "98faeb5bef800331e6a8002fbc96b30e4122a23438ae45a047190a531ea11323",
        "server/handler.py GatewayASGIHandler.handle (a copy of it)",
    ),
    (
        "rest_framework.views.APIView.dispatch",
        APIView.dispatch,
        "3472ce14592137053f20708c7c57616e49d71bd87fcbb1d730b579ae944f6bd1",
        "api/views.py AsyncApiView.dispatch (its awaited rewrite)",
    ),
    (
        "rest_framework.serializers.Serializer.fields",
        Serializer.fields.func,  # type: ignore[attr-defined]  (a cached_property)
        "96006b9bed0aeef1d424a06e1d4a7b563b73b69e676b51a4d0a5ee52193eb7fb",
        "api/serializers.py SharedFieldsMixin (fields bound once per class)",
    ),
]


@pytest.mark.parametrize(("name", "original", "digest", "copy"), PINS, ids=[p[0] for p in PINS])
def test_the_framework_code_a_copy_mirrors_is_unchanged(name, original, digest, copy):
    source = inspect.getsource(original)
    assert hashlib.sha256(source.encode()).hexdigest() == digest, (
        f"{name} changed in this version of the framework. Re-check {copy} against it, "
        "then update the digest in this test."
    )


def test_the_gateway_handler_still_overrides_what_it_copied():
    from server.handler import GatewayASGIHandler

    assert GatewayASGIHandler.handle is not ASGIHandler.handle
    assert issubclass(GatewayASGIHandler, ASGIHandler)
