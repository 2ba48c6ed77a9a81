"""
A Responses API request as a chat completions request, for model servers that speak only chat.

`normalize_input` turns `input` (a string, or a list of items) into stored-shape items with ids;
`chat_body` turns the conversation (previous items, then this request's) plus the request's
parameters into a chat body. Errors are `serializers.ValidationError`s naming the Responses
field (`input[2].content[0].image_url`, `tools[3].name`, ...).

What maps to what is the support table in docs/responses.md:

* `instructions` and the `system`/`developer` messages before the first other message become
  one leading `system` message (chat templates want at most one, first); a later one stays a
  `system` message where it was.
* `message` items: `input_text`/`output_text`/`refusal` parts become text, `input_image` a
  data-URL `image_url` part (http(s) URLs and file ids are refused: nothing is fetched).
* `function_call` items become an assistant message's `tool_calls` (consecutive calls, and an
  assistant message just before them, make one message); `function_call_output` items become
  `tool` messages.
* `reasoning` items are left out: chat servers take no reasoning back (their templates drop
  it), and an encrypted one means nothing to them.
* Function tools become chat function tools; the function tools of a `namespace` tool become
  `<namespace>__<name>` (and a call to one comes back as a `function_call` with its
  `namespace` and `name`). Hosted tools (`web_search`, `file_search`, `code_interpreter`,
  `mcp`, `custom`, ...) have nothing to run them on a chat server: they are left out of what
  the model sees, and named in the `X-LLMAPI-Skipped-Tools` header.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from rest_framework import serializers

from api.serializers import MAX_IMAGE_BYTES, validate_response_format
from inference.exceptions import quote
from inference.images import parse_data_url
from inference.structured import RefusedSchema, inspect_schema

NAMESPACE_SEPARATOR = "__"
# Item types a hosted tool produces: a client may send them back in its history; a chat
# server never saw them run, so they are left out of what it is sent.
HOSTED_ITEM_TYPES = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "code_interpreter_call",
        "image_generation_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "custom_tool_call",
        "custom_tool_call_output",
        "tool_search_call",
        "tool_search_output",
        "compaction",
    }
)
ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning"})
ROLES = ("user", "assistant", "system", "developer")
MAX_TOOLS = 128
MAX_NAME = 128

ID_PREFIXES = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def _error(where: str, message: str) -> serializers.ValidationError:
    return serializers.ValidationError({where: [message]})


# --- input ------------------------------------------------------------------------------------


def normalize_input(value: Any) -> list[dict[str, Any]]:
    """`input` as a list of items in the shape they are stored and listed in, each with an id."""
    if isinstance(value, str):
        return [_message_item("user", [{"type": "input_text", "text": value}])]
    if not isinstance(value, list):
        raise _error("input", "Expected a string or a list of items.")
    if len(value) > settings.SERVER_MAX_MESSAGES:
        raise _error(
            "input",
            f"{len(value)} items; the limit is {settings.SERVER_MAX_MESSAGES} "
            "(SERVER__MAX_MESSAGES).",
        )
    return [_normalize_item(item, f"input[{index}]") for index, item in enumerate(value)]


def _message_item(role: str, content: list[dict[str, Any]], item_id: str = "") -> dict[str, Any]:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": content,
    }


def _normalize_item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _error(where, "Expected an item (an object with a type).")
    kind = item.get("type", "message")  # an "easy" message has no type
    given_id: str = item["id"] if isinstance(item.get("id"), str) else ""
    if kind == "message":
        role = item.get("role")
        if role not in ROLES:
            raise _error(f"{where}.role", "Must be user, assistant, system or developer.")
        content = item.get("content")
        if isinstance(content, str):
            text_type = "output_text" if role == "assistant" else "input_text"
            parts = [{"type": text_type, "text": content}]
        elif isinstance(content, list):
            parts = [
                _normalize_part(part, f"{where}.content[{number}]", role)
                for number, part in enumerate(content)
            ]
        else:
            raise _error(f"{where}.content", "Expected a string or a list of content parts.")
        return _message_item(role, parts, given_id)
    if kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise _error(f"{where}.{name}", "Required, a string.")
        normalized = {
            "id": given_id or new_id("fc"),
            "type": "function_call",
            "status": "completed",
            "call_id": item["call_id"],
            "name": item["name"],
            "arguments": item["arguments"],
        }
        if isinstance(item.get("namespace"), str) and item["namespace"]:
            normalized["namespace"] = item["namespace"]
        return normalized
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise _error(f"{where}.call_id", "Required, a string.")
        output = item.get("output")
        if isinstance(output, list):
            output = [
                _normalize_part(part, f"{where}.output[{number}]", "tool")
                for number, part in enumerate(output)
            ]
        elif not isinstance(output, str):
            raise _error(f"{where}.output", "Expected a string or a list of content parts.")
        return {
            "id": given_id or new_id("fco"),
            "type": "function_call_output",
            "status": "completed",
            "call_id": item["call_id"],
            "output": output,
        }
    if kind == "reasoning":
        kept = {k: item[k] for k in ("summary", "content", "encrypted_content") if k in item}
        return {"id": given_id or new_id("rs"), "type": "reasoning", "summary": [], **kept}
    if kind in HOSTED_ITEM_TYPES:
        return {**item, "id": given_id or new_id("item")}
    if kind == "item_reference":
        raise _error(
            f"{where}.type",
            "item_reference is not supported; send the item itself, or previous_response_id.",
        )
    raise _error(f"{where}.type", f"Unknown item type '{quote(kind, 60)}'.")


def _normalize_part(part: Any, where: str, role: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise _error(where, "Expected a content part (an object with a type).")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(part.get("text"), str):
            raise _error(f"{where}.text", "Required, a string.")
        text_type = "output_text" if role == "assistant" else "input_text"
        normalized = {"type": text_type, "text": part["text"]}
        if text_type == "output_text":
            normalized["annotations"] = []
        return normalized
    if kind == "refusal":
        if not isinstance(part.get("refusal"), str):
            raise _error(f"{where}.refusal", "Required, a string.")
        return {"type": "refusal", "refusal": part["refusal"]}
    if kind == "input_image":
        if part.get("file_id") is not None:
            raise _error(
                f"{where}.file_id",
                "File ids are not supported; send the image as a data URL in image_url.",
            )
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _error(f"{where}.image_url", "Required: a data URL (data:image/png;base64,...).")
        if url.lower().startswith(("http://", "https://")):
            raise _error(
                f"{where}.image_url",
                "An http(s) URL; this server does not fetch images. Send the image itself as "
                "a data URL: data:image/png;base64,...",
            )
        try:
            parse_data_url(url, max_bytes=MAX_IMAGE_BYTES)
        except ValueError as exc:
            raise _error(f"{where}.image_url", f"{exc}.") from None
        return {"type": "input_image", "image_url": url, "detail": part.get("detail") or "auto"}
    if kind == "input_file":
        raise _error(f"{where}.type", "input_file is not supported; send the text as input_text.")
    raise _error(f"{where}.type", f"Unknown content part type '{quote(kind, 60)}'.")


# --- tools ------------------------------------------------------------------------------------


@dataclass
class ChatTools:
    """The chat tools for a request's tools, and what was left out."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # the hosted tools' types
    # chat name -> (namespace, name) for the functions of namespace tools
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)


def chat_tools(tools: Any) -> ChatTools:
    result = ChatTools()
    if tools is None:
        return result
    if not isinstance(tools, list):
        raise _error("tools", "Expected a list of tools.")
    if len(tools) > MAX_TOOLS:
        raise _error("tools", f"{len(tools)} tools; the limit is {MAX_TOOLS}.")
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _error(where, "Expected a tool (an object with a type).")
        if tool["type"] == "function":
            result.tools.append(_function_tool(tool, where, tool.get("name")))
        elif tool["type"] == "namespace":
            namespace = tool.get("name")
            if not isinstance(namespace, str) or not namespace:
                raise _error(f"{where}.name", "Required, a string.")
            members = tool.get("tools")
            if not isinstance(members, list):
                raise _error(f"{where}.tools", "Expected a list of tools.")
            for number, member in enumerate(members):
                inner = f"{where}.tools[{number}]"
                if not isinstance(member, dict) or member.get("type") != "function":
                    result.skipped.append(f"{namespace}.{_type_of(member)}")
                    continue
                name = member.get("name")
                chat_name = f"{namespace}{NAMESPACE_SEPARATOR}{name}"
                result.tools.append(_function_tool(member, inner, chat_name))
                result.namespaced[chat_name] = (namespace, str(name))
        else:
            result.skipped.append(quote(tool["type"], 40))
    if len(result.tools) > MAX_TOOLS:
        raise _error("tools", f"{len(result.tools)} functions; the limit is {MAX_TOOLS}.")
    return result


def _type_of(tool: Any) -> str:
    kind = tool.get("type") if isinstance(tool, dict) else None
    return quote(kind, 40) if isinstance(kind, str) else "unknown"


def _function_tool(tool: dict[str, Any], where: str, chat_name: Any) -> dict[str, Any]:
    name = tool.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise _error(f"{where}.name", f"Required, a string of 1 to {MAX_NAME} characters.")
    function: dict[str, Any] = {"name": chat_name}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    parameters = tool.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise _error(f"{where}.parameters", "Expected a JSON Schema object.")
        function["parameters"] = parameters
    if tool.get("strict") is not None:
        function["strict"] = bool(tool["strict"])
    if function.get("strict") and isinstance(parameters, dict):
        try:
            inspect_schema(parameters)
        except RefusedSchema as exc:
            raise _error(f"{where}.parameters", f"The schema {exc}") from None
    return {"type": "function", "function": function}


def chat_tool_choice(choice: Any, tools: ChatTools) -> Any:
    """`tool_choice` in chat terms; None when it should not be sent."""
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return choice if tools.tools else None
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise _error("tool_choice", 'Expected "auto", "none", "required" or an object.')
    if choice["type"] == "function":
        name = choice.get("name")
        if not isinstance(name, str):
            raise _error("tool_choice.name", "Required, a string.")
        if isinstance(choice.get("namespace"), str):
            name = f"{choice['namespace']}{NAMESPACE_SEPARATOR}{name}"
        return {"type": "function", "function": {"name": name}}
    if choice["type"] == "allowed_tools":
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise _error("tool_choice.mode", 'Must be "auto" or "required".')
        return mode if tools.tools else None
    raise _error(
        "tool_choice",
        f"Forces the hosted tool '{quote(choice['type'], 40)}', which no chat model server "
        "can run; only function tools can be forced.",
    )


def allowed_tool_names(choice: Any) -> set[str] | None:
    """The function names an `allowed_tools` choice keeps, or None for all of them."""
    if not isinstance(choice, dict) or choice.get("type") != "allowed_tools":
        return None
    names = set()
    for tool in choice.get("tools") or ():
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            names.add(tool["name"])
    return names


# --- the conversation -------------------------------------------------------------------------


def _text_of(parts: list[dict[str, Any]]) -> str:
    return "".join(
        part.get("text") or part.get("refusal") or ""
        for part in parts
        if part.get("type") in ("input_text", "output_text", "refusal")
    )


def _chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if not any(part.get("type") == "input_image" for part in parts):
        return _text_of(parts)
    content: list[dict[str, Any]] = []
    for part in parts:
        if part["type"] == "input_image":
            content.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            content.append({"type": "text", "text": part.get("text") or part.get("refusal", "")})
    return content


def chat_messages(items: list[dict[str, Any]], *, instructions: str | None) -> list[dict[str, Any]]:
    """The chat messages for a conversation's items (see the module docstring)."""
    leading: list[str] = [instructions] if instructions else []
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            if role == "system" and not messages:
                leading.append(_text_of(item["content"]))
                continue
            if role == "system":
                messages.append({"role": "system", "content": _text_of(item["content"])})
            elif role == "assistant":
                messages.append({"role": "assistant", "content": _text_of(item["content"])})
            else:
                messages.append({"role": "user", "content": _chat_content(item["content"])})
        elif kind == "function_call":
            name = item["name"]
            if item.get("namespace"):
                name = f"{item['namespace']}{NAMESPACE_SEPARATOR}{name}"
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": name, "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if last["content"] == "":
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            content = output if isinstance(output, str) else _tool_output_text(output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
        # reasoning and hosted tools' items: left out (module docstring)
    if leading:
        messages.insert(0, {"role": "system", "content": "\n\n".join(leading)})
    return messages


def _tool_output_text(parts: list[dict[str, Any]]) -> str:
    if any(part.get("type") == "input_image" for part in parts):
        raise _error(
            "input",
            "A function_call_output holds an image; chat model servers take only text in tool "
            "results. Send the image in a user message instead.",
        )
    return _text_of(parts)


# --- the request ------------------------------------------------------------------------------


def chat_format(text: Any) -> dict[str, Any] | None:
    """`text.format` as a chat `response_format`; None for plain text."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _error("text", "Expected an object such as {'format': {'type': 'text'}}.")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _error("text.format", "Expected an object with a type.")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        response_format: dict[str, Any] = {"type": "json_object"}
    elif kind == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        spec.setdefault("name", "response")
        response_format = {"type": "json_schema", "json_schema": spec}
    else:
        raise _error("text.format.type", 'Must be "text", "json_object" or "json_schema".')
    try:
        return validate_response_format(response_format)
    except serializers.ValidationError as exc:
        detail = exc.detail[0] if isinstance(exc.detail, list) else exc.detail
        message = str(detail).replace("json_schema.schema", "schema")
        raise _error("text.format", message) from None


@dataclass
class ChatRequest:
    body: dict[str, Any]  # the chat completions body (model still the client's name)
    tools: ChatTools


def chat_body(
    data: dict[str, Any], *, history: list[dict[str, Any]], items: list[dict[str, Any]]
) -> ChatRequest:
    """The chat body for a Responses request `data` continuing `history` with `items`."""
    tools = chat_tools(data.get("tools"))
    allowed = allowed_tool_names(data.get("tool_choice"))
    if allowed is not None:
        tools.tools = [t for t in tools.tools if t["function"]["name"] in allowed]
    instructions = data.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _error("instructions", "Expected a string.")
    messages = chat_messages([*history, *items], instructions=instructions)
    if not messages:
        raise _error("input", "The conversation is empty.")
    body: dict[str, Any] = {"model": data["model"], "messages": messages}
    if tools.tools:
        body["tools"] = tools.tools
    choice = chat_tool_choice(data.get("tool_choice"), tools)
    if choice is not None:
        body["tool_choice"] = choice
    if tools.tools and data.get("parallel_tool_calls") is not None:
        body["parallel_tool_calls"] = bool(data["parallel_tool_calls"])
    for source, target in (
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
    ):
        if data.get(source) is not None:
            body[target] = data[source]
    response_format = chat_format(data.get("text"))
    if response_format is not None:
        body["response_format"] = response_format
    reasoning = data.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        body["reasoning_effort"] = reasoning["effort"]
    return ChatRequest(body=body, tools=tools)
