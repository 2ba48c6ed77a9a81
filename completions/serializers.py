"""The seed API's request and answer shapes, with the ranges and defaults users see in /docs."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from api.serializers import (
    IMAGE_DEFAULTS,
    MAX_IMAGES,
    MAX_MESSAGES,
    TEXT_DEFAULTS,
    MessageSerializer,
    SharedFieldsMixin,
    StrictCharField,
    chat_params_serializer,
    check_total_chars,
)


@extend_schema_serializer(component_name="TextChat")
class TextChatRequestSerializer(chat_params_serializer("TextChatParams", TEXT_DEFAULTS)):  # type: ignore[misc]
    model = StrictCharField(
        required=False,
        max_length=256,
        help_text="A model of the catalog, by name or alias (GET /v1/models lists them). "
        "Leave it out for the server's default text model.",
    )
    messages = serializers.ListField(
        child=MessageSerializer(),
        allow_empty=False,
        max_length=MAX_MESSAGES,
        help_text="The conversation so far, oldest first. Send the whole history every time: "
        "the model remembers nothing between requests.",
    )

    def validate_messages(self, messages):
        check_total_chars(messages)
        return messages


# COMPONENT_SPLIT_REQUEST adds "Request": the schema names this `ImageChatRequest`.
@extend_schema_serializer(component_name="ImageChat")
class ImageChatRequestSerializer(
    chat_params_serializer("ImageChatParams", IMAGE_DEFAULTS, form=True)  # type: ignore[misc]
):
    image = serializers.ListField(
        child=serializers.FileField(allow_empty_file=False),
        allow_empty=False,
        max_length=MAX_IMAGES,
        help_text="The picture: JPEG, PNG, WebP or GIF (first frame). Repeat the field to send "
        "several pictures; they reach the model in order.",
    )
    prompt = StrictCharField(help_text="Your question or instruction about the picture.")
    model = StrictCharField(
        required=False,
        max_length=256,
        help_text="A model of the catalog, by name or alias (GET /v1/models lists them). "
        "Leave it out for the server's default image model.",
    )
    system = StrictCharField(
        required=False,
        allow_blank=True,
        help_text='Optional standing instructions, e.g. "Answer in one sentence."',
    )


class ChatResponseSerializer(SharedFieldsMixin, serializers.Serializer):
    response = serializers.CharField(help_text="The model's answer.")
    model = serializers.CharField(help_text="The model that answered.")
    finish_reason = serializers.CharField(
        allow_null=True,
        help_text='Why the answer ended: "stop" (finished) or "length" (hit max_tokens).',
    )
    usage = serializers.DictField(
        child=serializers.IntegerField(),
        allow_null=True,
        help_text="Tokens used: prompt_tokens, completion_tokens, total_tokens.",
    )
    parsed = serializers.JSONField(
        required=False,
        help_text="Only with a JSON response_format: the answer, already decoded and validated.",
    )

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if data.get("parsed") is None:
            data.pop("parsed", None)
        return data


def chat_response(result) -> dict[str, Any]:
    """
    What `ChatResponseSerializer(result).data` gives, built directly: the serializer documents
    the shape, this answers every request (a test holds the two equal).
    """
    usage = result.usage
    data: dict[str, Any] = {
        "response": str(result.response),
        "model": str(result.model),
        "finish_reason": None if result.finish_reason is None else str(result.finish_reason),
        "usage": None if usage is None else {str(name): int(n) for name, n in usage.items()},
    }
    if result.parsed is not None:
        data["parsed"] = result.parsed
    return data
