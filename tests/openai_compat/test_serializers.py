import pytest
from rest_framework import serializers

from openai_compat.serializers import OpenAIChatRequestSerializer, passthrough_body

USER = {"role": "user", "content": "hi"}
CALL = {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def errors_for(body: dict) -> dict:
    serializer = OpenAIChatRequestSerializer(data=body)
    assert not serializer.is_valid()
    return serializer.errors


def test_explicit_nulls_are_not_set():
    body = passthrough_body({"model": "m", "messages": [USER], "temperature": None, "stop": None})
    assert body == {"model": "m", "messages": [USER]}


def test_unknown_fields_pass_and_denied_ones_are_refused(settings):
    assert passthrough_body({"model": "m", "top_k": 5})["top_k"] == 5
    settings.OPENAI_DENIED_FIELDS = frozenset({"top_k"})
    with pytest.raises(serializers.ValidationError) as caught:
        passthrough_body({"model": "m", "top_k": 5})
    assert set(caught.value.detail) == {"top_k"}


def test_a_body_that_is_not_an_object_is_a_400():
    with pytest.raises(serializers.ValidationError):
        passthrough_body([1, 2])


def test_tool_conversation_is_kept_as_sent():
    messages = [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_0", "content": "42"},
        {"role": "user", "content": "so?", "name": "alice"},
    ]
    serializer = OpenAIChatRequestSerializer(data={"model": "m", "messages": messages})
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data["messages"] == messages


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ({"role": "tool", "content": "42"}, "tool_call_id"),
        ({"role": "user", "content": None}, "null only"),
        ({"role": "assistant", "content": None}, "null only"),
        ({"role": "assistant", "content": "", "tool_calls": "f"}, "tool_calls must be a list"),
        ({"role": "user", "content": [{"type": "video_url", "video_url": {}}]}, "text or"),
    ],
)
def test_malformed_tool_messages_are_refused(message, fragment):
    assert fragment in str(errors_for({"model": "m", "messages": [message]})["messages"])


def test_a_strict_tool_schema_is_inspected_on_arrival():
    tool = {
        "type": "function",
        "function": {"name": "f", "strict": True, "parameters": {"type": "object", "$ref": "x"}},
    }
    errors = errors_for({"model": "m", "messages": [USER], "tools": [tool]})
    assert "strict tool 'f'" in str(errors["tools"])


def test_a_non_strict_tool_schema_is_the_servers_business():
    tool = {"type": "function", "function": {"name": "f", "parameters": {"$ref": "x"}}}
    serializer = OpenAIChatRequestSerializer(
        data={"model": "m", "messages": [USER], "tools": [tool]}
    )
    assert serializer.is_valid(), serializer.errors
