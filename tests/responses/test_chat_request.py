import pytest
from rest_framework import serializers

from responses.chat_request import chat_body, chat_format, chat_tools, normalize_input


def body_for(data, history=()):
    items = normalize_input(data["input"])
    return chat_body({"model": "m", **data}, history=list(history), items=items).body


def field_of(exc: serializers.ValidationError) -> str:
    return next(iter(exc.detail))


def test_a_string_input_is_one_user_message_with_an_id():
    [item] = normalize_input("Hi")
    assert item["type"] == "message"
    assert item["role"] == "user"
    assert item["content"] == [{"type": "input_text", "text": "Hi"}]
    assert item["id"].startswith("msg_")


def test_instructions_and_leading_system_and_developer_messages_make_one_system_message():
    body = body_for(
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use metric units."},
                {"role": "system", "content": "No jokes."},
                {"role": "user", "content": "Hi"},
                {"role": "developer", "content": "Later rule."},
            ],
        }
    )
    assert body["messages"] == [
        {"role": "system", "content": "Be brief.\n\nUse metric units.\n\nNo jokes."},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Later rule."},
    ]


def test_calls_after_an_assistant_message_join_it_and_outputs_become_tool_messages():
    body = body_for(
        {
            "input": [
                {"role": "user", "content": "Two cities?"},
                {"role": "assistant", "content": "Checking."},
                {"type": "function_call", "call_id": "a", "name": "w", "arguments": "{}"},
                {"type": "function_call", "call_id": "b", "name": "w", "arguments": "[]"},
                {"type": "function_call_output", "call_id": "a", "output": "sun"},
                {
                    "type": "function_call_output",
                    "call_id": "b",
                    "output": [{"type": "input_text", "text": "rain"}],
                },
            ]
        }
    )
    assistant = body["messages"][1]
    assert assistant["content"] == "Checking."
    assert [call["id"] for call in assistant["tool_calls"]] == ["a", "b"]
    assert body["messages"][2:] == [
        {"role": "tool", "tool_call_id": "a", "content": "sun"},
        {"role": "tool", "tool_call_id": "b", "content": "rain"},
    ]


def test_history_comes_before_the_new_items():
    history = normalize_input([{"role": "user", "content": "First"}])
    body = body_for({"input": "Second"}, history=history)
    assert [m["content"] for m in body["messages"]] == ["First", "Second"]


def test_parameters_map_to_their_chat_names():
    body = body_for(
        {
            "input": "x",
            "max_output_tokens": 10,
            "temperature": 0.5,
            "top_p": 0.9,
            "reasoning": {"effort": "low", "summary": "auto"},
            "metadata": {"a": "b"},
            "store": False,
            "parallel_tool_calls": True,  # without tools: not sent
            "prompt_cache_key": "k",
        }
    )
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 10,
        "temperature": 0.5,
        "top_p": 0.9,
        "reasoning_effort": "low",
    }


def test_hosted_tools_are_skipped_and_namespaces_flattened():
    tools = chat_tools(
        [
            {"type": "web_search"},
            {"type": "function", "name": "f", "parameters": {"type": "object"}},
            {
                "type": "namespace",
                "name": "ns",
                "description": "d",
                "tools": [
                    {"type": "function", "name": "g", "description": "G"},
                    {"type": "custom", "name": "patch"},
                ],
            },
        ]
    )
    assert [t["function"]["name"] for t in tools.tools] == ["f", "ns__g"]
    assert tools.skipped == ["web_search", "ns.custom"]
    assert tools.namespaced == {"ns__g": ("ns", "g")}


def test_allowed_tools_keeps_only_the_named_functions():
    body = body_for(
        {
            "input": "x",
            "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "b"}],
            },
        }
    )
    assert [t["function"]["name"] for t in body["tools"]] == ["b"]
    assert body["tool_choice"] == "required"


def test_a_forced_function_is_a_chat_named_tool_choice():
    body = body_for(
        {
            "input": "x",
            "tools": [{"type": "function", "name": "a"}],
            "tool_choice": {"type": "function", "name": "a"},
        }
    )
    assert body["tool_choice"] == {"type": "function", "function": {"name": "a"}}


def test_tool_choice_without_tools_is_not_sent():
    body = body_for({"input": "x", "tools": [{"type": "web_search"}], "tool_choice": "auto"})
    assert "tools" not in body
    assert "tool_choice" not in body


def test_text_formats():
    assert chat_format({"format": {"type": "text"}}) is None
    assert chat_format({"format": {"type": "json_object"}}) == {"type": "json_object"}
    schema = {"type": "object"}
    assert chat_format({"format": {"type": "json_schema", "name": "n", "schema": schema}}) == {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": schema},
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"input": {"a": 1}}, "input"),
        ({"input": [1]}, "input[0]"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"input": [{"role": "user", "content": [{"type": "video"}]}]}, "input[0].content[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].image_url",
        ),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call_output", "call_id": "a"}]}, "input[0].output"),
        ({"input": "x", "tools": "all"}, "tools"),
        ({"input": "x", "tools": [{"type": "function", "name": ""}]}, "tools[0].name"),
        ({"input": "x", "tools": [{"type": "namespace", "name": "n"}]}, "tools[0].tools"),
        ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        ({"input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": "x", "instructions": 3}, "instructions"),
        ({"input": []}, "input"),
    ],
)
def test_bad_input_names_its_field(data, field):
    with pytest.raises(serializers.ValidationError) as caught:
        body_for(data)
    assert field_of(caught.value) == field


def test_a_strict_tool_with_a_refused_schema_names_its_parameters():
    tool = {
        "type": "function",
        "name": "f",
        "strict": True,
        "parameters": {"type": "object", "properties": {"a": {"$ref": "http://x/y.json"}}},
    }
    with pytest.raises(serializers.ValidationError) as caught:
        chat_tools([tool])
    assert field_of(caught.value) == "tools[0].parameters"


def test_too_many_items_are_refused(settings):
    settings.SERVER_MAX_MESSAGES = 2
    with pytest.raises(serializers.ValidationError) as caught:
        normalize_input(["a", "b", "c"])
    assert field_of(caught.value) == "input"
