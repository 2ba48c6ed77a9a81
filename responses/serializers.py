"""The Responses API request as `/v1/responses` accepts it."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from api.serializers import (
    MAX_TOKENS_LIMIT,
    FiniteFloatField,
    SharedFieldsMixin,
    StrictCharField,
    StrictIntegerField,
)

MAX_METADATA_KEYS = 16  # OpenAI's own limits on metadata
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


@extend_schema_serializer(component_name="Responses")
class ResponsesRequestSerializer(SharedFieldsMixin, serializers.Serializer):
    """
    The fields of a Responses body the gateway reads. Fields it does not use (`include`,
    `prompt_cache_key`, `user`, `client_metadata`, `truncation`, `service_tier`, ...) are
    accepted and left out of the chat request; docs/responses.md has the table.
    """

    model = StrictCharField(help_text="A model name from GET /v1/models.")
    input = serializers.JSONField(
        help_text="A string (one user message), or a list of items: messages (input_text, "
        "input_image parts), function_call, function_call_output, reasoning."
    )
    instructions = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
    previous_response_id = StrictCharField(required=False, max_length=64)
    stream = serializers.BooleanField(required=False, default=False)
    store = serializers.BooleanField(required=False, default=True)
    max_output_tokens = StrictIntegerField(required=False, min_value=1, max_value=MAX_TOKENS_LIMIT)
    temperature = FiniteFloatField(required=False, min_value=0.0, max_value=2.0)
    top_p = FiniteFloatField(required=False, min_value=0.0, max_value=1.0)
    parallel_tool_calls = serializers.BooleanField(required=False)
    tools = serializers.ListField(child=serializers.JSONField(), required=False)
    tool_choice = serializers.JSONField(required=False)
    text = serializers.DictField(required=False)
    reasoning = serializers.DictField(required=False)
    metadata = serializers.DictField(required=False)
    background = serializers.BooleanField(required=False, default=False)
    conversation = serializers.JSONField(required=False)
    prompt = serializers.JSONField(required=False)

    def validate_metadata(self, metadata):
        if len(metadata) > MAX_METADATA_KEYS:
            raise serializers.ValidationError(f"At most {MAX_METADATA_KEYS} keys.")
        for key, value in metadata.items():
            if len(key) > MAX_METADATA_KEY:
                raise serializers.ValidationError(
                    f"Keys have at most {MAX_METADATA_KEY} characters."
                )
            if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
                raise serializers.ValidationError(
                    f"Values are strings of at most {MAX_METADATA_VALUE} characters."
                )
        return metadata

    def validate_background(self, background):
        if background:
            raise serializers.ValidationError(
                "Background responses are not supported; stream the response instead."
            )
        return background

    def validate_conversation(self, conversation):
        raise serializers.ValidationError(
            "Conversations are not supported; continue with previous_response_id."
        )

    def validate_prompt(self, prompt):
        raise serializers.ValidationError("Stored prompts are not supported; send instructions.")


class InputItemsQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(required=False, default=20, min_value=1, max_value=100)
    order = serializers.ChoiceField(choices=("asc", "desc"), required=False, default="desc")
    after = serializers.CharField(required=False, max_length=64)
