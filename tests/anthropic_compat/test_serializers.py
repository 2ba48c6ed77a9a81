"""Hostile and unsupported Messages requests: a 400 naming the field, before any model call."""

import pytest

from anthropic_compat.serializers import CountTokensRequestSerializer, MessagesRequestSerializer

HI = [{"role": "user", "content": "Hi"}]


def errors_of(**fields) -> str:
    serializer = MessagesRequestSerializer(data={"model": "m", "max_tokens": 10, **fields})
    assert not serializer.is_valid()
    return str(serializer.errors)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "server_tool_use"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "url", "url": "http://x"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0].source",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f"}]}
                ]
            },
            "messages[0].content[0].input",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
            "messages[0].content[0].tool_use_id",
        ),
        (
            {"messages": HI, "tools": [{"type": "web_search_20250305", "name": "w"}]},
            "tools[0].type",
        ),
        ({"messages": HI, "tools": [{"name": "f"}]}, "tools[0].input_schema"),
        ({"messages": HI, "tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"messages": HI, "thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
        ({"messages": HI, "mcp_servers": [{"url": "http://x"}]}, "mcp_servers"),
        ({"messages": HI, "temperature": 1.5}, "temperature"),
        (
            {
                "messages": HI,
                "tools": [{"name": "f", "strict": True, "input_schema": {"$ref": "http://x/s"}}],
            },
            "tools[0].input_schema",
        ),
        ({"messages": HI, "system": [{"type": "image"}]}, "system[0]"),
        (
            {
                "messages": HI,
                "output_config": {
                    "format": {"type": "json_schema", "schema": {"$ref": "http://x"}}
                },
            },
            "output_config.format",
        ),
    ],
)
def test_refusals_name_the_field(fields, named):
    assert named in errors_of(**fields)


def test_max_tokens_is_required_but_not_to_count():
    serializer = MessagesRequestSerializer(data={"model": "m", "messages": HI})
    assert not serializer.is_valid()
    assert "max_tokens" in serializer.errors
    assert CountTokensRequestSerializer(data={"model": "m", "messages": HI}).is_valid()


def test_claude_code_fields_are_accepted():
    serializer = MessagesRequestSerializer(
        data={
            "model": "claude-opus-5-5",
            "max_tokens": 128000,
            "messages": HI,
            "thinking": {"type": "adaptive", "display": "omitted"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "output_config": {"effort": "medium"},
            "metadata": {"user_id": "{}"},
            "tools": [
                {"name": "Placeholder", "input_schema": {"type": "object"}, "defer_loading": True}
            ],
            "stream": True,
        }
    )
    assert serializer.is_valid(), serializer.errors
