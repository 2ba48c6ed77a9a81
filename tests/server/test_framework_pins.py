"""
Every place that copies, overrides or reaches into framework internals is pinned here to the
exact source of the framework code it depends on (or to the private attributes it uses): when
an upgrade of Django, DRF, uvicorn or llama-cpp-python changes that code, these tests fail and
say which place to re-check (then update the digest).
"""

from __future__ import annotations

import hashlib
import inspect

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.utils.deprecation import MiddlewareMixin
from httpx_aiohttp.transport import AiohttpResponseStream, AiohttpTransport
from rest_framework.serializers import Serializer
from rest_framework.views import APIView
from uvicorn.supervisors.multiprocess import Multiprocess

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
    (
        "django.core.handlers.asgi.ASGIHandler.__call__",
        ASGIHandler.__call__,
        "f756809e9c9308dcccb78a301fccf09196e80cdc4745690f80384d09b69dd102",
        "server/handler.py GatewayASGIHandler.__call__ (without ThreadSensitiveContext)",
    ),
    (
        "django.core.handlers.base.BaseHandler.resolve_request",
        BaseHandler.resolve_request,
        "ff178c3d63eebcd3e38110341593518dcd67d84cff94bbc7dd5aa323637cba6d",
        "server/handler.py GatewayASGIHandler.resolve_request (fixed routes remembered)",
    ),
    (
        "django.utils.deprecation.MiddlewareMixin.__acall__",
        MiddlewareMixin.__acall__,
        "adf8cbcaf9f11e45c4ac1953556ac422f2a6fe4193df5edbed186b2b66bea729",
        "server/middleware.py (the security middleware's __acall__ without a thread hop)",
    ),
    (
        "uvicorn.supervisors.multiprocess.Multiprocess.__init__",
        Multiprocess.__init__,
        "5e0f105cb4a381b5a206060d2b96ccbe29bdb83fe44b0165bbdb9847d578a5e6",
        "server/management/commands/serve.py DrainingMultiprocess (signal_queue, sockets)",
    ),
    (
        "httpx_aiohttp.transport.AiohttpTransport.handle_async_request",
        AiohttpTransport.handle_async_request,
        "685989131a3a46dc3a08c7fcc3b544ab6582868d222adc7706b75e9e0b028e11",
        "inference/backends/openai_http.py Transport.handle_whole_request (reads the body "
        "of its response in one piece)",
    ),
    (
        "httpx_aiohttp.transport.AiohttpResponseStream",
        AiohttpResponseStream,
        "63b6d551213f8bcb651110a1d3da5b8d0a056e1adf9045123c71454484ef6906",
        "inference/backends/openai_http.py Transport.handle_whole_request "
        "(its _aiohttp_response, its exception mapping)",
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


def test_the_private_attributes_the_server_uses_still_exist():
    """uvicorn's request cycle (`server/http_protocol.py`) and llama.cpp's model handle."""
    import inspect

    from llama_cpp._internals import LlamaModel
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    cycle = inspect.getsource(RequestResponseCycle.__init__)
    for name in ("self.disconnected", "self.message_event", "self.response_started"):
        assert name in cycle, f"server/http_protocol.py uses uvicorn's cycle {name}"
    assert "self.vocab" in inspect.getsource(LlamaModel.__init__), (
        "inference/backends/embedded.py uses llama-cpp-python's LlamaModel.vocab"
    )


def test_uvicorn_still_dispatches_sighup_to_handle_hup_and_keeps_its_process():
    """`DrainingMultiprocess.handle_hup` is found by name and uses each worker's `.process`."""
    from uvicorn.supervisors.multiprocess import Process

    assert 'getattr(self, f"handle_{sig_name.lower()}"' in inspect.getsource(
        Multiprocess.handle_signals
    ), "server/management/commands/serve.py DrainingMultiprocess.handle_hup"
    assert "self.process = get_subprocess(" in inspect.getsource(Process.__init__), (
        "server/management/commands/serve.py DrainingMultiprocess.handle_hup (Process.process)"
    )
