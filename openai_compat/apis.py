"""
The OpenAI-compatible surface: `GET /v1/models` and `POST /v1/chat/completions`.

Existing OpenAI clients (the `openai` SDKs, LangChain, LlamaIndex, curl scripts) work unchanged
with `base_url=http://host:1999/v1`. The same keys, serializers' ranges, services, concurrency
limits, structured-output validation and embedded model apply as on the seed endpoints; only
the request and answer shapes, and the error shape, are OpenAI's.
"""

from __future__ import annotations

import time
import uuid

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from api.exceptions import openai_exception_handler
from api.streaming import SSE_MEDIA_TYPE, unbuffered_response
from api.views import FirstRendererNegotiation, SdkApiView, answered_headers
from gateway import calls
from gateway.calls import Caller
from inference.catalog import ModelSpec
from inference.images import prepare_message_images
from openai_compat.presenters import openai_completion, openai_passthrough_frames
from openai_compat.serializers import (
    OpenAIChatRequestSerializer,
    OpenAICompletionsRequestSerializer,
    OpenAIEmbeddingsRequestSerializer,
    has_image_parts,
    passthrough_body,
)

OPENAI_SDK_EXAMPLE = """
```python
from openai import OpenAI

client = OpenAI(base_url="http://localhost:1999/v1", api_key="YOUR_API_KEY")
answer = client.chat.completions.create(
    model="smollm2-135m-instruct",  # see GET /v1/models
    messages=[{"role": "user", "content": "What is the capital of France?"}],
)
print(answer.choices[0].message.content)
```
"""


OPENAI_ERROR_RESPONSES = {
    400: OpenApiResponse(description="Invalid request."),
    401: OpenApiResponse(description="Missing or wrong key."),
    404: OpenApiResponse(description="Unknown model."),
    413: OpenApiResponse(description="The body is too large."),
    429: OpenApiResponse(description="The model is busy; see Retry-After."),
    502: OpenApiResponse(description="The model server failed."),
    503: OpenApiResponse(description="The model is not configured."),
    504: OpenApiResponse(description="The model server took too long."),
}


class OpenAIApiView(SdkApiView):
    content_negotiation_class = FirstRendererNegotiation

    def get_exception_handler(self):
        return openai_exception_handler


class OpenAIModelSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    created = serializers.IntegerField()
    owned_by = serializers.CharField()


class OpenAIModelListSerializer(serializers.Serializer):
    object = serializers.CharField()
    # OpenAI's list shape has a `data` key, which shadows Serializer.data (docs only).
    data = OpenAIModelSerializer(many=True)  # type: ignore[assignment]


def model_object(spec: ModelSpec) -> dict:
    """A model as OpenAI's API shows one, with the catalog's aliases and capabilities beside."""
    return {
        "id": spec.name,
        "object": "model",
        "created": 0,
        "owned_by": "llmapi",
        "aliases": list(spec.aliases),
        "capabilities": sorted(spec.capabilities),
    }


class OpenAIModelsApi(OpenAIApiView):
    @extend_schema(
        tags=["OpenAI-compatible"],
        summary="List the models (OpenAI format)",
        responses={200: OpenAIModelListSerializer},
    )
    async def get(self, request):
        catalog = calls.catalog()
        specs = (catalog.resolve(name) for name in catalog.names)
        data = [model_object(spec) for spec in specs if calls.may_use(request.user, spec)]
        return Response({"object": "list", "data": data})


class OpenAIModelApi(OpenAIApiView):
    @extend_schema(
        tags=["OpenAI-compatible"],
        summary="One model, by name or alias (OpenAI format)",
        responses={
            200: OpenAIModelSerializer,
            404: OpenApiResponse(description="No such model (OpenAI's error shape)."),
        },
    )
    async def get(self, request, model: str):
        caller = Caller.from_request(request, endpoint="v1/models")
        spec = calls.resolve_model(caller, model, require=False)
        return Response(model_object(spec))


class OpenAIChatCompletionsApi(OpenAIApiView):
    @extend_schema(
        tags=["OpenAI-compatible"],
        summary="Chat completion (OpenAI format)",
        description="The OpenAI chat completions API. With `stream: true`, answers with "
        "`chat.completion.chunk` events ending in `data: [DONE]`; `stream_options."
        "include_usage` adds a usage chunk. Accepts `Authorization: Bearer <key>` or "
        '`X-API-Key`. Errors use OpenAI\'s shape `{"error": {"message", "type", '
        '"param", "code"}}`.\n' + OPENAI_SDK_EXAMPLE,
        request=OpenAIChatRequestSerializer,
        responses={
            200: OpenApiResponse(description="A chat.completion object, or chunk events."),
            **OPENAI_ERROR_RESPONSES,
        },
        examples=[
            OpenApiExample(
                "A question",
                value={
                    "model": "smollm2-135m-instruct",
                    "messages": [{"role": "user", "content": "What is the capital of France?"}],
                },
                request_only=True,
            )
        ],
    )
    async def post(self, request):
        body = passthrough_body(request.data)
        serializer = OpenAIChatRequestSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        name, messages = data["model"], data["messages"]
        stream_options = data.get("stream_options") or {}
        needs_vision = has_image_parts(messages)
        caller = Caller.from_request(request, endpoint="v1/chat/completions")
        spec = calls.resolve_model(
            caller, name, capability="vision" if needs_vision else "chat", require=False
        )
        if needs_vision and not spec.has("vision"):
            raise serializers.ValidationError(
                {"messages": [f"The model '{name}' does not accept images; use the image model."]}
            )
        calls.require_capability(spec, "chat")
        if needs_vision:
            messages = await prepare_message_images(
                messages, max_bytes=spec.max_image_bytes, max_side=spec.max_image_side
            )
        body = {**body, "messages": messages}
        if "stream" in body:  # as the gateway read it ("true" would reach a server as a string)
            body["stream"] = data["stream"]
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if data["stream"]:
            opened, quota_headers = await calls.open_openai_chat_stream(
                caller, spec=spec, body=body
            )
            frames = openai_passthrough_frames(
                opened.events,
                model=spec.name,
                completion_id=completion_id,
                created=created,
                include_usage=bool(stream_options.get("include_usage")),
            )
            response = unbuffered_response(frames, content_type=SSE_MEDIA_TYPE)
            for header, value in {**answered_headers(opened), **quota_headers}.items():
                response[header] = value
            return response
        result, quota_headers = await calls.openai_chat(caller, spec=spec, body=body)
        return Response(
            openai_completion(result, completion_id=completion_id, created=created),
            headers={**answered_headers(result), **quota_headers},
        )


class OpenAIEmbeddingsApi(OpenAIApiView):
    @extend_schema(
        tags=["OpenAI-compatible"],
        summary="Embeddings (OpenAI format)",
        description="Passed through to the servers of a model with the `embeddings` "
        "capability; the body is forwarded as sent.",
        request=OpenAIEmbeddingsRequestSerializer,
        responses={
            200: OpenApiResponse(description="A list of embedding objects."),
            **OPENAI_ERROR_RESPONSES,
        },
    )
    async def post(self, request):
        body = passthrough_body(request.data)
        serializer = OpenAIEmbeddingsRequestSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        caller = Caller.from_request(request, endpoint="v1/embeddings")
        spec = calls.resolve_model(
            caller, serializer.validated_data["model"], capability="embeddings"
        )
        answer, quota_headers = await calls.openai_embeddings(caller, spec=spec, body=body)
        return Response(answer.body, headers={**answered_headers(answer), **quota_headers})


class OpenAICompletionsApi(OpenAIApiView):
    @extend_schema(
        tags=["OpenAI-compatible"],
        summary="Text completion, the legacy API (OpenAI format)",
        description="Passed through to the model's servers, whole or streamed; the body is "
        "forwarded as sent.",
        request=OpenAICompletionsRequestSerializer,
        responses={
            200: OpenApiResponse(description="A text_completion object, or chunks."),
            **OPENAI_ERROR_RESPONSES,
        },
    )
    async def post(self, request):
        body = passthrough_body(request.data)
        serializer = OpenAICompletionsRequestSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        caller = Caller.from_request(request, endpoint="v1/completions")
        spec = calls.resolve_model(caller, serializer.validated_data["model"])
        if serializer.validated_data["stream"]:
            opened, quota_headers = await calls.open_openai_legacy_stream(
                caller, spec=spec, body=body
            )
            frames = openai_passthrough_frames(
                opened.events,
                model=spec.name,
                completion_id=f"cmpl-{uuid.uuid4().hex}",
                created=int(time.time()),
                # The gateway asks the server for usage to count tokens; the client gets it
                # when it asked for it too.
                include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
                object_name="text_completion",
            )
            response = unbuffered_response(frames, content_type=SSE_MEDIA_TYPE)
            for header, value in {**answered_headers(opened), **quota_headers}.items():
                response[header] = value
            return response
        answer, quota_headers = await calls.openai_legacy_completion(caller, spec=spec, body=body)
        return Response(answer.body, headers={**answered_headers(answer), **quota_headers})


class OpenAINotFoundApi(OpenAIApiView):
    """Every other /v1 path: a 404 in OpenAI's shape, for any method, before authentication."""

    authentication_classes: list = []
    permission_classes: list = []
    schema = None  # not part of the API's documentation

    async def get(self, request, *args, **kwargs):
        raise NotFound(
            f"Unknown path {request.path[:100]!r}; the /v1 API has /v1/models, "
            "/v1/chat/completions, /v1/responses, /v1/completions and /v1/embeddings."
        )

    # Every method is async (Django runs the view on the event loop) and answers the same.
    post = put = patch = delete = head = options = get  # type: ignore[assignment]
