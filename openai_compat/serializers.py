"""The OpenAI chat request as `/v1` accepts it."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from api.serializers import (
    MAX_IMAGE_BYTES,
    MAX_MESSAGES,
    TEXT_DEFAULTS,
    StrictIntegerField,
    chat_params_serializer,
    check_total_chars,
)
from inference.images import parse_data_url

OPENAI_MESSAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
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
            ]
        },
    },
    "required": ["role", "content"],
}


@extend_schema_field({"type": "array", "items": OPENAI_MESSAGE_SCHEMA, "minItems": 1})
class OpenAIMessagesField(serializers.ListField):
    pass


@extend_schema_field(
    {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]}
)
class StopField(serializers.JSONField):
    pass


OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
CONTENT_PART_TYPES = ("text", "image_url")


# COMPONENT_SPLIT_REQUEST adds "Request": the schema names this `OpenAIChatRequest`.
@extend_schema_serializer(component_name="OpenAIChat")
class OpenAIChatRequestSerializer(chat_params_serializer("OpenAIChatParams", TEXT_DEFAULTS)):  # type: ignore[misc]
    """
    The OpenAI chat completions body, validated with the same ranges as the seed endpoints.

    Fields outside this allow-list are refused with 400 rather than passed through: a gateway
    that forwards unknown parameters lets each model server interpret (or silently ignore)
    them differently, and we promise the same behaviour on every backend.
    """

    model = serializers.CharField(help_text="A model name from GET /v1/models.")
    messages = OpenAIMessagesField(
        child=serializers.DictField(),
        allow_empty=False,
        max_length=MAX_MESSAGES,
        help_text="The conversation. `content` is text, or a list of text and image_url parts.",
    )
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = serializers.DictField(required=False)
    max_completion_tokens = StrictIntegerField(
        required=False, min_value=1, help_text="Newer name for max_tokens."
    )
    n = StrictIntegerField(
        required=False, min_value=1, max_value=1, help_text="Only 1 answer per request."
    )
    stop = StopField(required=False, help_text="Up to 4 strings that end the answer.")
    user = serializers.CharField(required=False, help_text="Accepted for compatibility; unused.")

    def validate_messages(self, messages):
        cleaned = []
        for index, message in enumerate(messages):
            role = message.get("role")
            role = OPENAI_ROLES.get(role) if isinstance(role, str) else None
            if role is None:
                raise serializers.ValidationError(
                    f"messages[{index}].role must be system, developer, user or assistant "
                    "(tool calls are not supported)."
                )
            content = message.get("content")
            if isinstance(content, list):
                for number, part in enumerate(content):
                    _check_content_part(part, where=f"messages[{index}].content[{number}]")
            elif not isinstance(content, str):
                raise serializers.ValidationError(
                    f"messages[{index}].content must be a string or a list of parts."
                )
            cleaned.append({"role": role, "content": content})
        check_total_chars(cleaned)
        return cleaned

    def validate_stop(self, value):
        if isinstance(value, str):
            value = [value]
        if (
            not isinstance(value, list)
            or len(value) > 4
            or not all(isinstance(s, str) for s in value)
        ):
            raise serializers.ValidationError("stop must be a string or a list of up to 4 strings.")
        return value

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if "max_completion_tokens" in attrs:
            attrs["max_tokens"] = attrs.pop("max_completion_tokens")
        attrs.pop("n", None)
        attrs.pop("user", None)
        return attrs


def has_image_parts(messages: list[dict]) -> bool:
    return any(
        isinstance(m["content"], list) and any(p["type"] == "image_url" for p in m["content"])
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
        raise serializers.ValidationError(f"{where} must be a text or image_url part.")
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
