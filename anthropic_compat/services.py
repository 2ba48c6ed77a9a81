"""
The Messages API on chat-completions servers: the translation of a Messages request into the
chat request the model server gets.

    body = chat_body(data, model=spec.name, stream=True)  # exactly what the server gets

The translation is plain data to data, with no call in it: calls go through `gateway.calls`,
and answers are shaped by `presenters`.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from inference.exceptions import ModelNotFound

# Prefixed to a tool result the client marked `is_error`: chat servers have no such flag.
TOOL_ERROR_PREFIX = "Error: "


def not_found_hint(exc: ModelNotFound, name: str) -> ModelNotFound:
    """A claude-* name that nothing maps: say how to map it."""
    if not name.startswith("claude") or settings.LLMAPI_MODEL_PATTERNS:
        return exc
    return ModelNotFound(
        f"{exc.detail} Claude clients ask for claude-* names: map them onto a model of the "
        "catalog with LLMAPI_MODEL_PATTERNS (for example claude-*=coder) or a catalog alias."
    )


# --- The chat request --------------------------------------------------------------------------


def chat_body(data: dict[str, Any], *, model: str, stream: bool) -> dict[str, Any]:
    """
    The chat completions body for a validated Messages request (see docs/anthropic.md for
    each field). The accounted path (`gateway.calls`) lowers `max_tokens` to the model's
    output limit: Claude Code asks for 32,000 or more, which a server refuses when it exceeds
    its context.
    """
    messages = chat_messages(data.get("system"), data["messages"])
    body: dict[str, Any] = {"model": model, "messages": messages}
    for name in ("max_tokens", "temperature", "top_p", "top_k"):
        if name in data:
            body[name] = data[name]
    if data.get("stop_sequences"):
        body["stop"] = list(data["stop_sequences"])
    tools = data.get("tools")
    choice = data.get("tool_choice") or {}
    if tools and choice.get("type") != "none":
        body["tools"] = [_chat_tool(tool) for tool in tools]
        if choice:
            body["tool_choice"] = _chat_tool_choice(choice)
        if choice.get("disable_parallel_tool_use"):
            body["parallel_tool_calls"] = False
    output_format = (data.get("output_config") or {}).get("format")
    if output_format:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": output_format["schema"]},
        }
    if messages and messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
        # A prefilled answer: the model continues it rather than starting a new turn (vLLM's
        # flags; llama.cpp's server continues a last assistant message on its own).
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    if stream:
        body["stream"] = True
    return body


def chat_messages(system: Any, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic's system and messages as chat messages, in order."""
    chat: list[dict[str, Any]] = []
    system_text = _system_text(system) if system else ""
    if system_text:
        chat.append({"role": "system", "content": system_text})
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":  # a system turn mid-conversation, as Claude Code sends
            chat.append({"role": "system", "content": _system_text(content)})
        elif role == "assistant":
            chat.append(_assistant_message(content))
        else:
            chat.extend(_user_messages(content))
    return chat


# Claude Code's first system block is billing metadata for Anthropic's servers, no instruction.
BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"


def _system_text(system: str | list[dict[str, Any]]) -> str:
    # Anthropic joins system blocks itself; cache_control has no meaning for these servers,
    # which cache prompt prefixes on their own.
    if isinstance(system, str):
        return system
    texts = (block["text"] for block in system)
    return "\n\n".join(text for text in texts if not text.startswith(BILLING_HEADER_PREFIX))


def _assistant_message(content: str | list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts = [block["text"] for block in content if block["type"] == "text"]
    calls = [
        {
            "id": block["id"],
            "type": "function",
            "function": {
                "name": block["name"],
                "arguments": json.dumps(block["input"], ensure_ascii=False),
            },
        }
        for block in content
        if block["type"] == "tool_use"
    ]
    # thinking blocks are the model's own earlier reasoning, signed for Anthropic's servers;
    # chat servers take no reasoning back, so they are left out.
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _user_messages(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    A user turn: its tool results become `tool` messages first (a chat server wants them right
    after the assistant's calls), then the rest of its blocks one user message.
    """
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        if block["type"] == "tool_result":
            text, images = _tool_result(block)
            messages.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
            parts.extend(images)  # a chat tool message holds text only
        else:
            parts.append(_user_part(block))
    if parts:
        if all(part["type"] == "text" for part in parts) and len(parts) == 1:
            messages.append({"role": "user", "content": parts[0]["text"]})
        else:
            messages.append({"role": "user", "content": parts})
    return messages


def _user_part(block: dict[str, Any]) -> dict[str, Any]:
    if block["type"] == "image":
        source = block["source"]
        url = f"data:{source['media_type']};base64,{source['data']}"
        return {"type": "image_url", "image_url": {"url": url}}
    if block["type"] == "document":
        return {"type": "text", "text": block["source"]["data"]}
    return {"type": "text", "text": block["text"]}


def _tool_result(block: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content = block.get("content", "")
    if isinstance(content, str):
        text, images = content, []
    else:
        text = "\n".join(part["text"] for part in content if part["type"] == "text")
        images = [_user_part(part) for part in content if part["type"] == "image"]
    if block.get("is_error"):
        text = TOOL_ERROR_PREFIX + text
    return text, images


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: dict[str, Any]) -> Any:
    kind = choice["type"]
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return {"auto": "auto", "any": "required", "none": "none"}[kind]


def shows_thinking(thinking: dict[str, Any] | None) -> bool:
    """
    Whether the answer carries the model's reasoning as thinking blocks: asked for
    (`enabled` or `adaptive`), and not with `display: "omitted"` (as Claude Code asks).
    """
    thinking = thinking or {}
    return thinking.get("type") in ("enabled", "adaptive") and thinking.get("display") != "omitted"


def has_images(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(message.get("content"), list)
        and any(part.get("type") == "image_url" for part in message["content"])
        for message in messages
    )
