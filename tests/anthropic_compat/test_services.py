"""The translation of Messages requests into chat requests, and model names."""

import pytest

from anthropic_compat import services
from anthropic_compat.serializers import MessagesRequestSerializer
from inference.exceptions import ModelNotFound

PNG = "iVBORw0KGgo="


def body_for(**fields) -> dict:
    data = {"model": "coder", "max_tokens": 100, **fields}
    serializer = MessagesRequestSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return services.chat_body(dict(serializer.validated_data), model="coder", stream=False)


def test_unmapped_claude_name_says_how_to_map_it(settings):
    settings.LLMAPI_MODEL_PATTERNS = ()
    hinted = services.not_found_hint(ModelNotFound("No such model."), "claude-sonnet-4-5")
    assert "LLMAPI_MODEL_PATTERNS" in hinted.detail
    other = ModelNotFound("No such model.")
    assert services.not_found_hint(other, "gpt-9") is other


def test_system_turn_mid_conversation_stays_in_place():
    body = body_for(
        system="Be brief.",
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},
        ],
    )
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "# Environment"},
    ]


def test_images_documents_and_tool_result_images():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    body = body_for(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "text", "data": "The text."}},
                    image,
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "a screenshot"}, image],
                    }
                ],
            },
        ]
    )
    url = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "The text."}, url]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "a screenshot"},
        {"role": "user", "content": [url]},
    ]
    assert services.has_images(body["messages"])


def test_thinking_blocks_are_left_out_of_the_assistant_turn():
    body = body_for(
        messages=[
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Hello"},
                ],
            },
            {"role": "user", "content": "Again"},
        ],
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert body["messages"][1] == {"role": "assistant", "content": "Hello"}
    assert "thinking" not in body


def test_a_prefilled_answer_is_continued():
    body = body_for(
        messages=[
            {"role": "user", "content": "Count"},
            {"role": "assistant", "content": "1, 2,"},
        ]
    )
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False


def test_output_format_becomes_a_json_schema_response_format():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = body_for(
        messages=[{"role": "user", "content": "Hi"}],
        output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"},
    )
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }


def test_strict_tools_keep_their_flag():
    tool = {"name": "f", "input_schema": {"type": "object"}, "strict": True}
    body = body_for(messages=[{"role": "user", "content": "Hi"}], tools=[tool])
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
        }
    ]


@pytest.mark.parametrize(
    ("thinking", "shown"),
    [
        (None, False),
        ({"type": "disabled"}, False),
        ({"type": "enabled", "budget_tokens": 1024}, True),
        ({"type": "adaptive"}, True),
        ({"type": "adaptive", "display": "omitted"}, False),  # what Claude Code sends
    ],
)
def test_thinking_is_shown_when_asked_and_not_omitted(thinking, shown):
    assert services.shows_thinking(thinking) is shown


def test_claude_codes_billing_block_is_left_out_of_the_system_prompt():
    body = body_for(
        system=[
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332;"},
            {"type": "text", "text": "You are an agent.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert body["messages"][0] == {"role": "system", "content": "You are an agent."}
