"""
The seed API: `/text_model/*` and `/image_model/*`. Each view validates with a serializer, awaits one service call, and
returns a `Response` or a `StreamingHttpResponse`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, FormParser, MultiPartParser
from rest_framework.renderers import JSONRenderer

from api.serializers import ErrorSerializer
from api.streaming import streaming_response, wants_event_stream
from api.views import AsyncApiView, FirstRendererNegotiation, answered_headers, validated
from completions.serializers import (
    ChatResponseSerializer,
    ImageChatRequestSerializer,
    TextChatRequestSerializer,
    chat_response,
)
from gateway import calls
from gateway.calls import Caller
from inference.catalog import ModelSpec
from inference.exceptions import ModelNotConfigured, PayloadTooLarge

ERROR_RESPONSES = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid input; `detail` names the field."),
    401: OpenApiResponse(ErrorSerializer, description="No X-API-Key header."),
    403: OpenApiResponse(ErrorSerializer, description="Wrong API key."),
    404: OpenApiResponse(ErrorSerializer, description="No model of that name or alias."),
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

    def stream(self, stream: calls.ChatStream, headers: dict[str, str]):
        response = streaming_response(
            stream.events, sse=wants_event_stream(self.request.headers.get("Accept", ""))
        )
        for header, value in {**answered_headers(stream), **headers}.items():
            response[header] = value
        return response


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
        caller = Caller.from_request(request, endpoint="text_model/chat/completion")
        spec = calls.resolve_model(caller, data.pop("model", None), role="text")
        messages = data.pop("messages")
        result, headers = await calls.chat_completion(
            caller, spec=spec, messages=messages, params=data
        )
        return self.answer(chat_response(result), {**answered_headers(result), **headers})


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
        caller = Caller.from_request(request, endpoint="text_model/chat/stream")
        spec = calls.resolve_model(caller, data.pop("model", None), role="text")
        messages = data.pop("messages")
        stream, headers = await calls.open_chat_stream(
            caller, spec=spec, messages=messages, params=data
        )
        return self.stream(stream, headers)


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


FORM_PARSERS: list[type[BaseParser]] = [LimitedMultiPartParser, LimitedFormParser]


async def image_chat_request(
    request, *, endpoint: str
) -> tuple[Caller, ModelSpec, list[dict], dict]:
    data = validated(ImageChatRequestSerializer, request)
    caller = Caller.from_request(request, endpoint=endpoint)
    try:
        spec = calls.resolve_model(
            caller, data.pop("model", None), role="image", capability="vision"
        )
    except ModelNotConfigured:
        # The upload is checked first all the same (with the seed image limits): a bad image
        # is the client's to fix whether or not a vision model is configured.
        await calls.prepare_uploads(data.pop("image"), **calls.seed_image_limits())
        raise
    messages = await calls.image_chat_messages(
        spec=spec,
        prompt=data.pop("prompt"),
        system=data.pop("system", None),
        images=data.pop("image"),
    )
    return caller, spec, messages, data


# Multipart form fields (prompt, parameters) beside the images.
FORM_FIELDS_ALLOWANCE = 1024 * 1024


class ImageUploadLimit:
    @classmethod
    def body_limit(cls) -> tuple[int, str]:
        """
        The most an upload may send (read by the server before the body is buffered): the
        largest image any vision model of the catalog takes (the model is only known once
        the form is parsed; each model's own limit is checked again per image).
        """
        vision = [spec.max_image_bytes for spec in calls.catalog() if spec.has("vision")]
        largest = max(vision, default=settings.LLMAPI_MODELS["image"]["max_image_bytes"])
        return largest + FORM_FIELDS_ALLOWANCE, "IMAGE_MODEL__MAX_IMAGE_BYTES"


class ImageChatCompletionApi(ImageUploadLimit, AsyncApiView):
    parser_classes = FORM_PARSERS

    @extend_schema(
        tags=["Image model"],
        summary="Ask the vision model about a picture; get the whole answer",
        request={"multipart/form-data": ImageChatRequestSerializer},
        responses={200: ChatResponseSerializer, **IMAGE_ERROR_RESPONSES},
        examples=IMAGE_EXAMPLES,
    )
    async def post(self, request):
        caller, spec, messages, params = await image_chat_request(
            request, endpoint="image_model/chat/completion"
        )
        result, headers = await calls.chat_completion(
            caller, spec=spec, messages=messages, params=params
        )
        return self.answer(chat_response(result), {**answered_headers(result), **headers})


class ImageChatStreamApi(ImageUploadLimit, StreamingApiView):
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
        caller, spec, messages, params = await image_chat_request(
            request, endpoint="image_model/chat/stream"
        )
        stream, headers = await calls.open_chat_stream(
            caller, spec=spec, messages=messages, params=params
        )
        return self.stream(stream, headers)
