"""The OpenAI chat request as `/v1` accepts it."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from api.serializers import (
    MAX_IMAGE_BYTES,
    MAX_MESSAGES,
    ResponseFormatField,
    SharedFieldsMixin,
    check_total_chars,
    validate_response_format,
)
from inference.images import parse_data_url
from inference.structured import RefusedSchema, inspect_schema, strict_tool_schemas

MAX_TOOLS = 128  # OpenAI's own limit

OPENAI_MESSAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "role": {
            "type": "string",
            "enum": ["system", "developer", "user", "assistant", "tool"],
        },
        "tool_call_id": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
        "name": {"type": "string"},
        "content": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "oneOf": [
                            {
                                "type": "object",
                                "properties": {
                                    "type": {"type": "string", "enum": ["text"]},
                                    "text": {"type": "string"},
                                },
                                "required": ["type", "text"],
                            },
                            {
                                "type": "object",
                                "properties": {
                                    "type": {"type": "string", "enum": ["image_url"]},
                                    "image_url": {
                                        "type": "object",
                                        "properties": {
                                            "url": {
                                                "type": "string",
                                                "description": "A base64 data URL: data:image/png;base64,... "
                                                "(http(s) URLs are refused).",
                                            }
                                        },
                                        "required": ["url"],
                                    },
                                },
                                "required": ["type", "image_url"],
                            },
                        ]
                    },
                },
                {"type": "null"},
            ]
        },
    },
    "required": ["role"],
}


@extend_schema_field({"type": "array", "items": OPENAI_MESSAGE_SCHEMA, "minItems": 1})
class OpenAIMessagesField(serializers.ListField):
    pass


OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Parts that name a URL to fetch (vLLM's audio_url, video_url) are refused: the model server
# would fetch whatever address a client names. image_url is checked to be a data URL.
INLINE_PART_TYPES = ("input_audio", "refusal")
CONTENT_PART_TYPES = ("text", "image_url", *INLINE_PART_TYPES)
# The fields /v1 reads itself; every other field is the model server's business and is
# forwarded as sent (unless OPENAI__DENIED_FIELDS names it).
GATEWAY_FIELDS = ("model", "messages", "stream", "stream_options", "response_format", "tools")


# COMPONENT_SPLIT_REQUEST adds "Request": the schema names this `OpenAIChatRequest`.
@extend_schema_serializer(component_name="OpenAIChat")
class OpenAIChatRequestSerializer(SharedFieldsMixin, serializers.Serializer):
    """
    The fields of an OpenAI chat completions body that the gateway itself must understand.

    Everything else (temperature, max_tokens, tool_choice, logprobs, n, vendor parameters such
    as top_k or chat_template_kwargs) is forwarded to the model server as the client sent it:
    the server applies its own defaults and ranges, as OpenAI's API would. An explicit `null`
    means "not set" and is not forwarded. The body size and JSON depth limits still apply.
    """

    model = serializers.CharField(help_text="A model name from GET /v1/models.")
    messages = OpenAIMessagesField(
        child=serializers.DictField(),
        allow_empty=False,
        max_length=MAX_MESSAGES,
        help_text="The conversation: system, developer, user, assistant (with tool_calls) and "
        "tool messages. `content` is text, or a list of text and image_url parts.",
    )
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = serializers.DictField(required=False)
    response_format = ResponseFormatField(required=False)
    tools = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        max_length=MAX_TOOLS,
        help_text="Function tools, passed to models with the `tools` capability. The "
        "parameters of a tool marked `strict: true` are checked like a json_schema format.",
    )

    def validate_messages(self, messages):
        for index, message in enumerate(messages):
            _check_message(message, where=f"messages[{index}]")
        check_total_chars(messages)
        return messages

    def validate_response_format(self, value):
        return validate_response_format(value)

    def validate_tools(self, tools):
        for index, tool in enumerate(tools):
            function = tool.get("function")
            if tool.get("type", "function") != "function" or not isinstance(function, dict):
                continue  # other tool kinds are the model server's business
            if not isinstance(function.get("name"), str):
                raise serializers.ValidationError(f"tools[{index}].function.name is required.")
        for name, schema in strict_tool_schemas(tools).items():
            try:
                inspect_schema(schema)
            except RefusedSchema as exc:
                raise serializers.ValidationError(
                    f"The parameters of strict tool '{name[:60]}' {exc}"
                ) from None
        return tools


def passthrough_body(data) -> dict:
    """
    The client's body without its explicit nulls ("not set"), refusing the fields the operator
    denied (OPENAI__DENIED_FIELDS). Fields are forwarded as sent, so they are checked here
    only for what the gateway reads.
    """
    if not isinstance(data, dict):
        raise serializers.ValidationError({"body": ["Expected a JSON object."]})
    body = {key: value for key, value in data.items() if value is not None}
    denied = sorted(key for key in body if key in settings.OPENAI_DENIED_FIELDS)
    if denied:
        raise serializers.ValidationError(
            {key: ["This field is not accepted by this server."] for key in denied}
        )
    return body


def _check_message(message: dict, *, where: str) -> None:
    role = message.get("role")
    if role not in OPENAI_ROLES:
        raise serializers.ValidationError(
            f"{where}.role must be system, developer, user, assistant or tool."
        )
    content = message.get("content")
    if isinstance(content, list):
        for number, part in enumerate(content):
            _check_content_part(part, where=f"{where}.content[{number}]")
    elif content is None:
        # An assistant message that only calls tools has no content.
        if role != "assistant" or not (message.get("tool_calls") or message.get("function_call")):
            raise serializers.ValidationError(
                f"{where}.content may be null only in an assistant message with tool_calls."
            )
    elif not isinstance(content, str):
        raise serializers.ValidationError(f"{where}.content must be a string or a list of parts.")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise serializers.ValidationError(f"{where}.tool_call_id is required in a tool message.")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not isinstance(tool_calls, list):
        raise serializers.ValidationError(f"{where}.tool_calls must be a list.")


def has_image_parts(messages: list[dict]) -> bool:
    return any(
        isinstance(m.get("content"), list)
        and any(p.get("type") == "image_url" for p in m["content"])
        for m in messages
    )


def _check_content_part(part, *, where: str) -> None:
    """
    A text part's `text` is a string; an image part holds a base64 `data:image/...` URL within
    the image size limit. The image itself is checked like an upload later, off the event
    loop. http(s) URLs are refused: the model server would fetch whatever address a client
    names (cloud metadata endpoints, internal services).
    """
    if not isinstance(part, dict) or part.get("type") not in CONTENT_PART_TYPES:
        raise serializers.ValidationError(
            f"{where} must be a text or image_url part (or input_audio, refusal)."
        )
    if part["type"] in INLINE_PART_TYPES:
        return  # inline data or text, the model server's business
    if part["type"] == "text":
        if not isinstance(part.get("text"), str):
            raise serializers.ValidationError(f"{where}.text must be a string.")
        return
    url = _image_url(part.get("image_url"))
    if url is None:
        raise serializers.ValidationError(f"{where}.image_url must be an object with a url.")
    if url.lower().startswith(("http://", "https://")):
        raise serializers.ValidationError(
            f"{where}.image_url.url is an http(s) URL; this server does not fetch images. "
            "Send the image itself as a data URL: data:image/png;base64,..."
        )
    try:
        parse_data_url(url, max_bytes=MAX_IMAGE_BYTES)
    except ValueError as exc:
        raise serializers.ValidationError(f"{where}.image_url.url {exc}.") from None


def _image_url(image_url) -> str | None:
    url = image_url.get("url") if isinstance(image_url, dict) else None
    return url if isinstance(url, str) else None


@extend_schema_serializer(component_name="OpenAIEmbeddings")
class OpenAIEmbeddingsRequestSerializer(SharedFieldsMixin, serializers.Serializer):
    """What the gateway reads of an embeddings body; the rest is forwarded as sent."""

    model = serializers.CharField(help_text="A model with the `embeddings` capability.")
    input = serializers.JSONField(help_text="A string, a list of strings or of token lists.")


@extend_schema_serializer(component_name="OpenAICompletions")
class OpenAICompletionsRequestSerializer(SharedFieldsMixin, serializers.Serializer):
    """What the gateway reads of a legacy completions body; the rest is forwarded as sent."""

    model = serializers.CharField(help_text="A model name from GET /v1/models.")
    prompt = serializers.JSONField(help_text="A string or a list of strings.")
    stream = serializers.BooleanField(required=False, default=False)
