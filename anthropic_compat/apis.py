"""
Anthropic's Messages API on the catalog's chat models: `POST /v1/messages` (whole or streamed)
and `POST /v1/messages/count_tokens`.

Anthropic's SDKs, the Vercel AI SDK's anthropic provider and Claude Code work unchanged with
their base URL set to the gateway. Keys are the gateway's own, sent as `x-api-key` or
`Authorization: Bearer`; `anthropic-version`, `anthropic-beta` and `?beta=true` are accepted.
Requests are translated onto chat completions (`anthropic_compat.services`) and accounted like
every model call; answers and errors have Anthropic's shapes (`presenters`, `exceptions`).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from anthropic_compat import services
from anthropic_compat.exceptions import anthropic_exception_handler
from anthropic_compat.presenters import message_object, message_stream_frames
from anthropic_compat.serializers import CountTokensRequestSerializer, MessagesRequestSerializer
from api.serializers import check_total_chars
from api.streaming import SSE_MEDIA_TYPE, unbuffered_response
from api.views import FirstRendererNegotiation, SdkApiView, answered_headers
from gateway import calls
from gateway.calls import Caller
from inference.catalog import ModelSpec
from inference.exceptions import ModelNotFound
from inference.images import prepare_message_images

ANTHROPIC_SDK_EXAMPLE = """
```python
import anthropic

client = anthropic.Anthropic(base_url="http://localhost:1999", api_key="YOUR_API_KEY")
message = client.messages.create(
    model="smollm2-135m-instruct",  # or a claude-* name mapped by LLMAPI_MODEL_PATTERNS
    max_tokens=256,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
)
print(message.content[0].text)
```
"""

ERROR_RESPONSES = {
    400: OpenApiResponse(description="invalid_request_error: the message names the field."),
    401: OpenApiResponse(description="authentication_error: missing or wrong key."),
    404: OpenApiResponse(description="not_found_error: unknown model."),
    413: OpenApiResponse(description="request_too_large."),
    429: OpenApiResponse(description="rate_limit_error: quota or busy model; see retry-after."),
    502: OpenApiResponse(description="api_error: the model server failed."),
    503: OpenApiResponse(description="overloaded_error: see retry-after."),
    504: OpenApiResponse(description="timeout_error: the model server took too long."),
}


class AnthropicApiView(SdkApiView):
    content_negotiation_class = FirstRendererNegotiation

    def get_exception_handler(self):
        return anthropic_exception_handler


async def _prepared(
    request, serializer_class, *, endpoint: str
) -> tuple[dict, Caller, ModelSpec, dict]:
    """The validated request, its caller, its model (in the key's scope) and its chat body."""
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = dict(serializer.validated_data)
    caller = Caller.from_request(request, endpoint=endpoint)
    body = services.chat_body(data, model=data["model"], stream=bool(data.get("stream")))
    try:
        check_total_chars(body["messages"])
    except ValidationError as exc:
        raise ValidationError({"messages": exc.detail}) from None
    needs_vision = services.has_images(body["messages"])
    capability = "vision" if needs_vision else "chat"
    try:
        spec = calls.resolve_model(caller, data["model"], capability=capability, require=False)
    except ModelNotFound as exc:
        raise services.not_found_hint(exc, data["model"]) from None
    calls.require_capability(spec, capability)
    body["model"] = spec.name  # a claude-* name, mapped by LLMAPI_MODEL_PATTERNS
    if needs_vision:
        body["messages"] = await prepare_message_images(
            body["messages"], max_bytes=spec.max_image_bytes, max_side=spec.max_image_side
        )
    return data, caller, spec, body


class MessagesApi(AnthropicApiView):
    @extend_schema(
        tags=["Anthropic-compatible"],
        summary="Create a message (Anthropic format)",
        description="Anthropic's Messages API, translated onto the model's chat completions. "
        "With `stream: true`, answers with Anthropic's events (`message_start` ... "
        "`message_stop`). Accepts `x-api-key` or `Authorization: Bearer`. Errors use "
        'Anthropic\'s shape `{"type": "error", "error": {"type", "message"}}`. '
        "docs/anthropic.md lists what is translated.\n" + ANTHROPIC_SDK_EXAMPLE,
        request=MessagesRequestSerializer,
        responses={
            200: OpenApiResponse(description="A message object, or its stream of events."),
            **ERROR_RESPONSES,
        },
        examples=[
            OpenApiExample(
                "A question",
                value={
                    "model": "smollm2-135m-instruct",
                    "max_tokens": 256,
                    "messages": [{"role": "user", "content": "What is the capital of France?"}],
                },
                request_only=True,
            )
        ],
    )
    async def post(self, request):
        data, caller, spec, body = await _prepared(
            request, MessagesRequestSerializer, endpoint="v1/messages"
        )
        stop_sequences = list(data.get("stop_sequences") or ())
        thinking = services.shows_thinking(data.get("thinking"))
        if data["stream"]:
            opened, quota_headers = await calls.open_openai_chat_stream(
                caller, spec=spec, body=body
            )
            frames = message_stream_frames(
                opened.events,
                model=opened.answered_by,
                stop_sequences=stop_sequences,
                thinking=thinking,
            )
            response = unbuffered_response(frames, content_type=SSE_MEDIA_TYPE)
            for header, value in {**answered_headers(opened), **quota_headers}.items():
                response[header] = value
            return response
        result, quota_headers = await calls.openai_chat(caller, spec=spec, body=body)
        message = message_object(
            result, model=result.answered_by, stop_sequences=stop_sequences, thinking=thinking
        )
        return Response(message, headers={**answered_headers(result), **quota_headers})


class CountTokensApi(AnthropicApiView):
    @extend_schema(
        tags=["Anthropic-compatible"],
        summary="Count a message's input tokens (Anthropic format)",
        description="The prompt's tokens by the model server's own tokenizer (vLLM's and "
        "llama.cpp's `/tokenize`, with the chat template). Where the server has none, an "
        'estimate, said so by `"estimated": true` and the header X-LLMAPI-Token-Count: estimate.',
        request=CountTokensRequestSerializer,
        responses={200: OpenApiResponse(description='{"input_tokens": N}'), **ERROR_RESPONSES},
    )
    async def post(self, request):
        _, caller, spec, body = await _prepared(
            request, CountTokensRequestSerializer, endpoint="v1/messages/count_tokens"
        )
        answer, quota_headers = await calls.count_chat_tokens(
            caller, spec=spec, messages=body["messages"], tools=body.get("tools")
        )
        counted = {"input_tokens": answer.body["input_tokens"]}
        if answer.body["estimated"]:
            counted["estimated"] = True
        how = "estimate" if answer.body["estimated"] else "tokenizer"
        return Response(
            counted,
            headers={"X-LLMAPI-Token-Count": how, "X-LLMAPI-Model": spec.name, **quota_headers},
        )
