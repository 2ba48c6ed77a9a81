"""
The HTTP endpoints. Each view validates with a serializer, awaits one service call, and
returns a `Response` or a `StreamingHttpResponse`.
"""

from __future__ import annotations

import functools
import inspect
from http import HTTPStatus
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template.response import SimpleTemplateResponse
from django.templatetags.static import static
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from completions import services
from completions.authentication import (
    INVALID_KEY_DETAIL,
    log_in_session,
    log_out_session,
    session_client,
)
from completions.content_security import OFFLINE_PAGE_CSP
from completions.exceptions import PayloadTooLarge
from completions.registry import ModelSpec, get_model_spec
from completions.serializers import (
    ChatResponseSerializer,
    ErrorSerializer,
    ImageChatRequestSerializer,
    TextChatRequestSerializer,
)
from completions.streaming import streaming_response, wants_event_stream


class AsyncApiView(APIView):
    """
    DRF's APIView, dispatched natively on the event loop.

    Authentication, permissions, parsing, the exception handler and rendering are DRF's own;
    only the handler call is awaited. Nothing in DRF's request cycle here touches a database,
    so running it on the loop (rather than hopping to a thread per request) is safe and fast.
    """

    async def dispatch(self, request, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
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


ERROR_RESPONSES = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid input; `detail` names the field."),
    401: OpenApiResponse(ErrorSerializer, description="No X-API-Key header."),
    403: OpenApiResponse(ErrorSerializer, description="Wrong API key."),
    429: OpenApiResponse(ErrorSerializer, description="The model is busy; see Retry-After."),
    502: OpenApiResponse(ErrorSerializer, description="The model server failed."),
    503: OpenApiResponse(ErrorSerializer, description="The model is not configured."),
    504: OpenApiResponse(ErrorSerializer, description="The model server took too long."),
}

TEXT_EXAMPLES = [
    OpenApiExample(
        "A simple question",
        value={
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0.7,
            "max_tokens": 100,
        },
        request_only=True,
    ),
    OpenApiExample(
        "Multi-turn conversation",
        value={
            "messages": [
                {"role": "user", "content": "What is Python?"},
                {"role": "assistant", "content": "Python is a programming language..."},
                {"role": "user", "content": "What are its main features?"},
            ]
        },
        request_only=True,
    ),
    OpenApiExample(
        "Creative writing",
        value={
            "messages": [{"role": "user", "content": "Write a creative story"}],
            "temperature": 1.5,
            "frequency_penalty": 0.5,
            "presence_penalty": 0.6,
        },
        request_only=True,
    ),
    OpenApiExample(
        "Deterministic answer",
        value={
            "messages": [{"role": "user", "content": "Calculate 2+2"}],
            "temperature": 0.0,
            "seed": 42,
        },
        request_only=True,
    ),
    OpenApiExample(
        "JSON mode",
        value={
            "messages": [{"role": "user", "content": "List three colours as JSON."}],
            "response_format": {"type": "json_object"},
        },
        request_only=True,
    ),
    OpenApiExample(
        "Structured output (product review)",
        value={
            "messages": [{"role": "user", "content": "Analyze this product review: great value"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "product_review",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "sentiment": {
                                "type": "string",
                                "enum": ["positive", "negative", "neutral"],
                            },
                            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                            "summary": {"type": "string"},
                        },
                        "required": ["sentiment", "rating", "summary"],
                    },
                },
            },
        },
        request_only=True,
    ),
    OpenApiExample(
        "Answer",
        value={
            "response": "The capital of France is Paris.",
            "model": "my-model",
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22},
        },
        response_only=True,
    ),
]


def validated(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


STREAM_DESCRIPTION = (
    "Plain text by default (`curl -N` prints it live). Send `Accept: text/event-stream` for "
    'Server-Sent Events: `data: {"delta": ...}` events, a last event with `finish_reason`, '
    "`usage` and `model`, then `data: [DONE]`. A failure after the first byte ends plain text "
    "abruptly, or sends an `event: error` over SSE."
)
STREAM_RESPONSES: dict[Any, OpenApiResponse] = {
    (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="The answer, streamed."),
    (200, "text/event-stream"): OpenApiResponse(
        OpenApiTypes.STR, description="Server-Sent Events."
    ),
    **ERROR_RESPONSES,
}


class StreamingApiView(AsyncApiView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = FirstRendererNegotiation

    def stream(self, events):
        return streaming_response(
            events, sse=wants_event_stream(self.request.headers.get("Accept", ""))
        )


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
REDOC_LOCAL_LOGO = "completions/redoc-logo.svg"


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


# Where "Log in with API key" leads when the page was opened directly.
BROWSABLE_API_HOME = "/text_model/chat/completion"


def safe_next_url(request) -> str:
    """The page to return to after logging in or out: only ever one on this server."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return BROWSABLE_API_HOME


@never_cache
@csrf_protect
def api_key_login(request):
    """
    "Log in with API key" for the browsable API: the key is checked exactly as the
    X-API-Key header is, and the browser session remembers it (see authentication.py).
    """
    next_url = safe_next_url(request)
    error, status = "", HTTPStatus.OK
    if request.method == "POST":
        if log_in_session(request, request.POST.get("key", "").strip()) is not None:
            return HttpResponseRedirect(next_url)
        error, status = INVALID_KEY_DETAIL, HTTPStatus.FORBIDDEN
    context = {"next": next_url, "error": error, "client": session_client(request)}
    response = render(request, "completions/api_key_login.html", context, status=status)
    response["Content-Security-Policy"] = OFFLINE_PAGE_CSP
    return response


@never_cache
@require_POST
@csrf_protect
def api_key_logout(request):
    log_out_session(request)
    return HttpResponseRedirect(safe_next_url(request))


class HealthApi(AsyncApiView):
    """Liveness: the process serves HTTP. No key, no model call."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]

    @extend_schema(
        tags=["Health"],
        summary="Liveness: is the server up?",
        auth=[],
        responses={200: OpenApiResponse(description='Always `{"status": "ok"}`.')},
    )
    async def get(self, request):
        return Response({"status": "ok"})


class ReadinessApi(HealthApi):
    """Readiness: every configured model can answer."""

    @extend_schema(
        tags=["Health"],
        summary="Readiness: can every configured model answer?",
        auth=[],
        description="200 when each configured model has a reachable, non-ejected server or its "
        "embedded model is loaded; 503 otherwise. Shows per-model status, never secrets.",
        responses={
            200: OpenApiResponse(description="Ready."),
            503: OpenApiResponse(description="Not ready; see the per-model status."),
        },
    )
    async def get(self, request):
        report = await services.readiness()
        status = HTTPStatus.OK if report["ready"] else HTTPStatus.SERVICE_UNAVAILABLE
        return Response(report, status=status)


class TextChatCompletionApi(AsyncApiView):
    # What the browsable API's form starts with.
    browsable_api_example = TEXT_EXAMPLES[0].value

    @extend_schema(
        tags=["Text model"],
        summary="Ask the text model; get the whole answer",
        request=TextChatRequestSerializer,
        responses={200: ChatResponseSerializer, **ERROR_RESPONSES},
        examples=TEXT_EXAMPLES,
    )
    async def post(self, request):
        data = validated(TextChatRequestSerializer, request)
        messages = data.pop("messages")
        result = await services.chat_completion(
            spec=get_model_spec("text"), messages=messages, params=data
        )
        return Response(ChatResponseSerializer(result).data)


class TextChatStreamApi(StreamingApiView):
    @extend_schema(
        tags=["Text model"],
        summary="Ask the text model; watch the answer arrive",
        description=STREAM_DESCRIPTION,
        request=TextChatRequestSerializer,
        responses=STREAM_RESPONSES,
        examples=[
            OpenApiExample(
                "A short story",
                value={
                    "messages": [{"role": "user", "content": "Tell me a short story"}],
                    "temperature": 0.8,
                },
                request_only=True,
            ),
            *TEXT_EXAMPLES[:-1],
        ],
    )
    async def post(self, request):
        data = validated(TextChatRequestSerializer, request)
        messages = data.pop("messages")
        events = await services.open_chat_stream(
            spec=get_model_spec("text"), messages=messages, params=data
        )
        return self.stream(events)


IMAGE_ERROR_RESPONSES = {
    **ERROR_RESPONSES,
    413: OpenApiResponse(ErrorSerializer, description="The image is too large."),
    415: OpenApiResponse(ErrorSerializer, description="Not JPEG, PNG, WebP or GIF."),
}
IMAGE_EXAMPLES = [
    OpenApiExample(
        "Objects in a photo",
        value={"prompt": "What objects are in this image?", "temperature": 0.3},
        request_only=True,
    ),
    OpenApiExample(
        "Answer",
        value={
            "response": "The image contains a laptop, coffee mug, and notebook on a wooden desk.",
            "model": "my-vlm",
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 620, "completion_tokens": 17, "total_tokens": 637},
        },
        response_only=True,
    ),
]


FORM_LIMIT_ERRORS = {
    TooManyFieldsSent: ("fields", "DATA_UPLOAD_MAX_NUMBER_FIELDS"),
    TooManyFilesSent: ("files", "DATA_UPLOAD_MAX_NUMBER_FILES"),
}


class LimitedFormParsing:
    """
    Django refuses forms with too many fields or files by raising SuspiciousOperation
    subclasses, which DRF's parsers let through (a 500). They are the client's fault: a 400
    that says which limit was hit. Fields too large to buffer are a 413.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except (TooManyFieldsSent, TooManyFilesSent) as exc:
            what, name = FORM_LIMIT_ERRORS[type(exc)]
            limit = getattr(settings, name)
            raise ParseError(f"The form has more than {limit} {what}.") from None
        except RequestDataTooBig:
            raise PayloadTooLarge(
                "The form's fields are larger than "
                f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes (SERVER__MAX_BODY_BYTES)."
            ) from None


class LimitedMultiPartParser(LimitedFormParsing, MultiPartParser):
    pass


class LimitedFormParser(LimitedFormParsing, FormParser):
    pass


FORM_PARSERS = [LimitedMultiPartParser, LimitedFormParser]


async def image_chat_request(request) -> tuple[ModelSpec, list[dict], dict]:
    data = validated(ImageChatRequestSerializer, request)
    spec = get_model_spec("image")
    messages = await services.image_chat_messages(
        spec=spec,
        prompt=data.pop("prompt"),
        system=data.pop("system", None),
        images=data.pop("image"),
    )
    return spec, messages, data


class ImageChatCompletionApi(AsyncApiView):
    parser_classes = FORM_PARSERS

    @extend_schema(
        tags=["Image model"],
        summary="Ask the vision model about a picture; get the whole answer",
        request={"multipart/form-data": ImageChatRequestSerializer},
        responses={200: ChatResponseSerializer, **IMAGE_ERROR_RESPONSES},
        examples=IMAGE_EXAMPLES,
    )
    async def post(self, request):
        spec, messages, params = await image_chat_request(request)
        result = await services.chat_completion(spec=spec, messages=messages, params=params)
        return Response(ChatResponseSerializer(result).data)


class ImageChatStreamApi(StreamingApiView):
    parser_classes = FORM_PARSERS

    @extend_schema(
        tags=["Image model"],
        summary="Ask the vision model about a picture; watch the answer arrive",
        description=STREAM_DESCRIPTION,
        request={"multipart/form-data": ImageChatRequestSerializer},
        responses={**STREAM_RESPONSES, **IMAGE_ERROR_RESPONSES},
        examples=IMAGE_EXAMPLES[:1],
    )
    async def post(self, request):
        spec, messages, params = await image_chat_request(request)
        events = await services.open_chat_stream(spec=spec, messages=messages, params=params)
        return self.stream(events)
