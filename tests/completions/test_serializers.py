import pytest

from completions.serializers import (
    ChatResponseSerializer,
    TextChatRequestSerializer,
    chat_response,
)
from gateway.calls import ChatResult
from openai_compat.serializers import OpenAIChatRequestSerializer

MESSAGES = [{"role": "user", "content": "Hello"}]


def errors_for(data: dict) -> dict:
    serializer = TextChatRequestSerializer(data=data)
    assert not serializer.is_valid()
    return serializer.errors


def test_minimal_request_is_valid_and_leaves_defaults_to_the_service():
    serializer = TextChatRequestSerializer(data={"messages": MESSAGES})
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data == {"messages": MESSAGES}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", 2.01),
        ("max_tokens", 0),
        ("top_p", 1.5),
        ("frequency_penalty", -2.5),
        ("presence_penalty", 2.5),
        ("temperature", "hot"),
        ("temperature", True),
        ("seed", 1.5),
        ("temperature", "NaN"),
    ],
)
def test_out_of_range_parameter_is_named(field, value):
    assert field in errors_for({"messages": MESSAGES, field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 0), ("temperature", 2), ("top_p", 0), ("frequency_penalty", -2), ("seed", -5)],
)
def test_boundaries_are_accepted(field, value):
    serializer = TextChatRequestSerializer(data={"messages": MESSAGES, field: value})
    assert serializer.is_valid(), serializer.errors


@pytest.mark.parametrize(
    "messages",
    [
        [],
        "hello",
        [{"role": "robot", "content": "x"}],
        [{"role": "user"}],
        [{"role": "user", "content": 5}],
    ],
)
def test_bad_messages_are_rejected(messages):
    assert "messages" in errors_for({"messages": messages})


def test_unknown_fields_are_rejected_so_typos_surface():
    assert "max_token" in errors_for({"messages": MESSAGES, "max_token": 5})


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "yaml"},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"name": "x"}},
        {"type": "json_schema", "json_schema": {"schema": {"type": "not-a-type"}}},
        "json",
    ],
)
def test_invalid_response_format_is_rejected(response_format):
    assert "response_format" in errors_for(
        {"messages": MESSAGES, "response_format": response_format}
    )


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "text"},
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}},
    ],
)
def test_valid_response_formats_are_accepted(response_format):
    serializer = TextChatRequestSerializer(
        data={"messages": MESSAGES, "response_format": response_format}
    )
    assert serializer.is_valid(), serializer.errors


def test_unknown_fields_inside_messages_are_rejected():
    errors = errors_for({"messages": [{"role": "user", "content": "hi", "name": "x"}]})
    assert "name" in str(errors["messages"])


def test_shared_fields_do_not_leak_between_requests():
    bad = TextChatRequestSerializer(data={"messages": [], "temperature": 9})
    good = TextChatRequestSerializer(data={"messages": MESSAGES, "temperature": 1})
    assert not bad.is_valid()
    assert good.is_valid(), good.errors
    assert good.validated_data["temperature"] == 1
    assert set(bad.errors) == {"messages", "temperature"}


@pytest.mark.parametrize("role", [{}, [], 5, None, "tool"])
def test_openai_message_with_a_non_string_role_is_a_400_not_a_crash(role):
    # Found by schemathesis: {"role": {}} used to raise TypeError (unhashable dict) -> 500.
    serializer = OpenAIChatRequestSerializer(
        data={"model": "m", "messages": [{"role": role, "content": ""}]}
    )
    assert not serializer.is_valid()
    assert "messages" in serializer.errors


def test_unknown_and_invalid_fields_are_reported_together():
    errors = errors_for({"messages": MESSAGES, "temperature": 3, "max_token": 5})
    assert set(errors) == {"temperature", "max_token"}


# --- /v1 message parts ----------------------------------------------------------------------------

PNG_DATA_URL = "data:image/png;base64,iVBORw0KGgo="


def openai_errors(content) -> str:
    serializer = OpenAIChatRequestSerializer(
        data={"model": "m", "messages": [{"role": "user", "content": content}]}
    )
    assert not serializer.is_valid()
    return str(serializer.errors["messages"])


@pytest.mark.parametrize(
    ("part", "fragment"),
    [
        ({"type": "text", "text": {"an": "object"}}, "text must be a string"),
        ({"type": "text", "text": 42}, "text must be a string"),
        ({"type": "text"}, "text must be a string"),
        ({"type": "image_url", "image_url": {"url": "http://169.254.169.254/"}}, "http(s)"),
        ({"type": "image_url", "image_url": {"url": "HTTPS://example.com/a.png"}}, "http(s)"),
        ({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}, "base64 data URL"),
        ({"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}, "data:image"),
        ({"type": "image_url", "image_url": {"url": "data:image/png,raw"}}, "base64 data URL"),
        ({"type": "image_url", "image_url": "data:image/png;base64,aGk="}, "object with a url"),
        ({"type": "tool_call"}, "text or image_url"),
        ("just a string", "text or image_url"),
    ],
)
def test_openai_content_parts_are_checked(part, fragment):
    assert fragment in openai_errors([part])


def test_openai_data_url_over_the_size_limit_is_refused_before_decoding():
    from api import serializers

    payload = "A" * (serializers.MAX_IMAGE_BYTES // 3 * 4 + 8)
    assert "IMAGE_MODEL__MAX_IMAGE_BYTES" in openai_errors(
        [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{payload}"}}]
    )


def test_openai_text_and_data_url_parts_are_accepted():
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG_DATA_URL, "detail": "low"}},
    ]
    serializer = OpenAIChatRequestSerializer(
        data={"model": "m", "messages": [{"role": "user", "content": content}]}
    )
    assert serializer.is_valid(), serializer.errors


@pytest.mark.parametrize(
    "result",
    [
        ChatResult("Paris.", "fake-llm", "stop", {"prompt_tokens": 9, "completion_tokens": 2}),
        ChatResult("", "m", None, None),
        ChatResult('{"a": 1}', "m", "length", {"total_tokens": 3}, parsed={"a": [1, None]}),
        ChatResult('é \u2028 "q"', "m", "stop", {}, parsed=0),
    ],
)
def test_the_direct_answer_is_what_the_documented_serializer_gives(result):
    assert chat_response(result) == ChatResponseSerializer(result).data
