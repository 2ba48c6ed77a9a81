"""Input and output shapes of the API, with the ranges and defaults users see in /docs."""

from __future__ import annotations

import math

from django.conf import settings
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from completions.images import parse_data_url
from completions.parsers import loads_bounded
from completions.structured import RefusedSchema, inspect_schema

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
    """

    _shared_fields = None

    @property
    def fields(self):
        cls = type(self)
        if cls.__dict__.get("_shared_fields") is None:
            cls._shared_fields = super().fields
        return cls._shared_fields


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
@extend_schema_serializer(component_name="TextChat")
class TextChatRequestSerializer(chat_params_serializer("TextChatParams", TEXT_DEFAULTS)):  # type: ignore[misc]
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
    system = StrictCharField(
        required=False,
        allow_blank=True,
        help_text='Optional standing instructions, e.g. "Answer in one sentence."',
    )


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


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, in words.")
