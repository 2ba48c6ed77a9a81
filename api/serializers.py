"""
Request fields shared by the seed API and `/v1`: strict scalars, messages, sampling parameters
with the ranges and defaults users see in /docs, and `response_format` (checked on arrival).
"""

from __future__ import annotations

import math

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.parsers import loads_bounded
from inference.structured import RefusedSchema, inspect_schema

TEXT_DEFAULTS = settings.LLMAPI_MODELS["text"]["defaults"]
IMAGE_DEFAULTS = settings.LLMAPI_MODELS["image"]["defaults"]
MAX_IMAGES = 16
MAX_IMAGE_BYTES = settings.LLMAPI_MODELS["image"]["max_image_bytes"]

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = settings.SERVER_MAX_MESSAGES
MAX_TOTAL_CHARS = settings.SERVER_MAX_TOTAL_CHARS
# Far above any model's context; keeps values inside what JSON encoders and servers accept.
MAX_TOKENS_LIMIT = 2**31 - 1


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class FiniteFloatField(serializers.FloatField):
    """A FloatField that refuses booleans, NaN and infinity."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class SharedFieldsMixin:
    """
    Bind the declared fields once per class, not once per request.

    DRF deep-copies every field for every serializer instance, which was the largest single
    cost of a request in profiles. Validation and rendering are synchronous and keep their
    state in local variables, so requests on the event loop can share the bound fields.
    They are bound to an instance made for the purpose, without data: the fields' `parent`
    must not keep a request's body alive after the request.
    """

    _shared_fields = None

    @property
    def fields(self):
        cls = type(self)
        shared = cls.__dict__.get("_shared_fields")
        if shared is None:
            template = cls()  # no data, no context: what the bound fields refer to
            shared = cls._shared_fields = super(SharedFieldsMixin, template).fields
        return shared


class RejectUnknownFieldsMixin(SharedFieldsMixin):
    """Unknown fields are a 400: a typo such as `max_token` must not be silently ignored."""

    def to_internal_value(self, data):
        unknown = sorted(set(data.keys()) - set(self.fields)) if hasattr(data, "keys") else []
        errors = {name: ["Unknown field."] for name in unknown}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, dict):
                errors = {**exc.detail, **errors}  # report every problem at once
            raise serializers.ValidationError(errors or exc.detail) from None
        if errors:
            raise serializers.ValidationError(errors)
        return value


class MessageSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    role = serializers.ChoiceField(
        choices=ROLES,
        help_text="Who says it: `system` (standing instructions), `user` (you) or `assistant` "
        "(the model's earlier answers).",
    )
    content = StrictCharField(
        allow_blank=True, trim_whitespace=False, help_text="What is said, as plain text."
    )


RESPONSE_FORMAT_SCHEMA = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"type": {"type": "string", "enum": ["text", "json_object"]}},
            "required": ["type"],
        },
        {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": ["json_schema"]},
                "json_schema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "schema": {"type": "object", "description": "A JSON Schema."},
                        "strict": {"type": "boolean"},
                    },
                    "required": ["schema"],
                },
            },
            "required": ["type", "json_schema"],
        },
    ]
}


@extend_schema_field(RESPONSE_FORMAT_SCHEMA)
class ResponseFormatField(serializers.JSONField):
    """`{"type": "text" | "json_object"}` or `{"type": "json_schema", "json_schema": {...}}`."""

    def to_internal_value(self, data):
        if getattr(data, "is_json_string", False):  # a multipart form field: JSON text
            try:
                return loads_bounded(str(data))  # orjson takes no str subclass
            except ValueError as exc:
                raise serializers.ValidationError(str(exc)) from None
        # From a JSON body: already parsed, depth-checked JSON (DRF's json.dumps round trip
        # would only recurse through it again).
        return data


@extend_schema_field({"type": "string", "description": "response_format, JSON-encoded."})
class FormResponseFormatField(ResponseFormatField):
    """The same, sent as a JSON string in a multipart form field."""


def _sampling_fields(defaults: dict, *, form: bool = False) -> dict[str, serializers.Field]:
    """The optional sampling parameters shared by every chat endpoint, documented for newcomers."""
    return {
        "temperature": FiniteFloatField(
            required=False,
            min_value=0.0,
            max_value=2.0,
            help_text="Randomness, 0 to 2. 0 gives the most likely answer every time; 0.7-1.5 "
            f"suits creative writing. Default: {defaults['temperature']}.",
        ),
        "max_tokens": StrictIntegerField(
            required=False,
            min_value=1,
            max_value=MAX_TOKENS_LIMIT,
            help_text="The longest answer allowed, in tokens (a token is about 3/4 of a word). "
            f"Default: {defaults['max_tokens']}.",
        ),
        "top_p": FiniteFloatField(
            required=False,
            min_value=0.0,
            max_value=1.0,
            help_text="Nucleus sampling, 0 to 1: only the likeliest words whose chances add up "
            f"to top_p are considered. Change this or temperature, rarely both. Default: "
            f"{defaults['top_p']}.",
        ),
        "frequency_penalty": FiniteFloatField(
            required=False,
            min_value=-2.0,
            max_value=2.0,
            help_text="-2 to 2. Positive values make the model repeat the same words less. "
            f"Default: {defaults['frequency_penalty']}.",
        ),
        "presence_penalty": FiniteFloatField(
            required=False,
            min_value=-2.0,
            max_value=2.0,
            help_text="-2 to 2. Positive values push the model towards new topics. "
            f"Default: {defaults['presence_penalty']}.",
        ),
        "seed": StrictIntegerField(
            required=False,
            min_value=-(2**63),
            max_value=2**63 - 1,
            help_text="Fixes the random choices: the same seed and input give the same answer "
            f"on servers that support it. Default: {defaults['seed']}.",
        ),
        "response_format": (FormResponseFormatField if form else ResponseFormatField)(
            required=False,
            help_text='The answer\'s format: {"type": "text"} (default), {"type": "json_object"} '
            'for any JSON object, or {"type": "json_schema", "json_schema": {"name": ..., '
            '"schema": {...}}} for JSON that follows your schema.',
        ),
    }


class ChatParamsMixin(RejectUnknownFieldsMixin):
    def validate_response_format(self, value):
        return validate_response_format(value)


def check_total_chars(messages: list[dict]) -> None:
    """A conversation longer than SERVER__MAX_TOTAL_CHARS is refused before it costs anything."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(
                len(str(part.get("text", ""))) for part in content if isinstance(part, dict)
            )
    if total > MAX_TOTAL_CHARS:
        raise serializers.ValidationError(
            f"The conversation has {total} characters; the limit is {MAX_TOTAL_CHARS} "
            "(SERVER__MAX_TOTAL_CHARS)."
        )


def chat_params_serializer(
    name: str, defaults: dict, *, form: bool = False
) -> type[serializers.Serializer]:
    """A serializer class with the sampling parameters, their help naming these defaults."""
    fields = _sampling_fields(defaults, form=form)
    return type(name, (ChatParamsMixin, serializers.Serializer), fields)


# COMPONENT_SPLIT_REQUEST adds "Request": the schema names this `TextChatRequest`.


def validate_response_format(value):
    """
    The format, with a JSON Schema checked here, before any model call: see
    `structured.inspect_schema` (size, depth, dialect, in-document references, no reference
    loops, linear-time patterns).
    """
    if not isinstance(value, dict):
        raise serializers.ValidationError('Expected an object such as {"type": "json_object"}.')
    kind = value.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise serializers.ValidationError('type must be "text", "json_object" or "json_schema".')
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise serializers.ValidationError(
                'json_schema needs an object with a "schema" (a JSON Schema object).'
            )
        try:
            inspect_schema(spec["schema"])
        except RefusedSchema as exc:
            raise serializers.ValidationError(f"json_schema.schema {exc}") from None
    return value


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, in words.")
