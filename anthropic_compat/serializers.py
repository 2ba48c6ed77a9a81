"""
The Messages request as `/v1/messages` accepts it: Anthropic's fields, checked here before any
model call, with errors naming the field (`messages[2].content[0].source.type`).

Fields the gateway does not translate are accepted and ignored when they only steer
Anthropic's own service (`service_tier`, `context_management`, `container`, `output_config.
effort`), and refused with a reason when ignoring them would give a wrong answer (`mcp_servers`,
server tools, URL and file sources). `docs/anthropic.md` lists each one.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from api.serializers import (
    MAX_IMAGE_BYTES,
    MAX_MESSAGES,
    MAX_TOKENS_LIMIT,
    FiniteFloatField,
    SharedFieldsMixin,
    StrictCharField,
    StrictIntegerField,
    validate_response_format,
)
from inference.structured import RefusedSchema, inspect_schema

MAX_TOOLS = 512  # Claude Code with a few MCP servers sends well over OpenAI's 128
MAX_STOP_SEQUENCES = 64
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
THINKING_TYPES = ("enabled", "disabled", "adaptive")
TOOL_CHOICE_TYPES = ("auto", "any", "tool", "none")
ROLES = ("user", "assistant", "system")
USER_BLOCKS = ("text", "image", "document", "tool_result")
ASSISTANT_BLOCKS = ("text", "tool_use", "thinking", "redacted_thinking")
# Blocks of Anthropic's own server tools: their results come from Anthropic's servers.
SERVER_TOOL_BLOCKS = (
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
    "search_result",
)


class MessagesRequestError(serializers.ValidationError):
    """A field of the Messages request that cannot be served; the message names it."""


def _fail(where: str, message: str) -> None:
    raise MessagesRequestError({where: [message]})


@extend_schema_serializer(component_name="AnthropicMessages")
class MessagesRequestSerializer(SharedFieldsMixin, serializers.Serializer):
    """The fields of a Messages request the gateway reads; see the module docstring."""

    model = StrictCharField(max_length=256, help_text="A catalog model, alias or mapped name.")
    max_tokens = StrictIntegerField(
        min_value=1,
        max_value=MAX_TOKENS_LIMIT,
        help_text="Required, as on Anthropic's API. Capped at the model's own output limit.",
    )
    messages = serializers.ListField(
        child=serializers.JSONField(), allow_empty=False, max_length=MAX_MESSAGES
    )
    system = serializers.JSONField(required=False, help_text="A string or a list of text blocks.")
    stop_sequences = serializers.ListField(
        child=StrictCharField(trim_whitespace=False, max_length=1000),
        required=False,
        max_length=MAX_STOP_SEQUENCES,
    )
    temperature = FiniteFloatField(required=False, min_value=0.0, max_value=1.0)
    top_p = FiniteFloatField(required=False, min_value=0.0, max_value=1.0)
    top_k = StrictIntegerField(required=False, min_value=0, max_value=MAX_TOKENS_LIMIT)
    stream = serializers.BooleanField(required=False, default=False)
    tools = serializers.ListField(
        child=serializers.JSONField(), required=False, max_length=MAX_TOOLS
    )
    tool_choice = serializers.JSONField(required=False)
    metadata = serializers.JSONField(required=False)
    thinking = serializers.JSONField(required=False)
    output_config = serializers.JSONField(required=False)
    mcp_servers = serializers.JSONField(required=False)

    def validate_system(self, system):
        if isinstance(system, str):
            return system
        _check_text_blocks(system, where="system")
        return system

    def validate_messages(self, messages):
        for index, message in enumerate(messages):
            _check_message(message, where=f"messages[{index}]")
        return messages

    def validate_tools(self, tools):
        names = set()
        for index, tool in enumerate(tools):
            where = f"tools[{index}]"
            if not isinstance(tool, dict):
                _fail(where, "Expected a tool object with name and input_schema.")
            kind = tool.get("type", "custom")
            if kind not in ("custom", None):
                _fail(
                    f"{where}.type",
                    f"'{str(kind)[:60]}' is one of Anthropic's server tools, which run on "
                    "Anthropic's servers; this server offers client tools (name, input_schema) only.",
                )
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                _fail(f"{where}.name", "This field is required.")
            if not isinstance(tool.get("input_schema"), dict):
                _fail(f"{where}.input_schema", "Expected a JSON Schema object.")
            if "description" in tool and not isinstance(tool["description"], str):
                _fail(f"{where}.description", "Expected a string.")
            if tool.get("strict") is True:
                # The core checks a strict tool's arguments against its schema: a hostile
                # schema is refused here, before it costs anything.
                try:
                    inspect_schema(tool["input_schema"])
                except RefusedSchema as exc:
                    _fail(f"{where}.input_schema", f"The schema {exc}")
            if tool["name"] in names:
                _fail(f"{where}.name", f"Tool names must be unique: '{tool['name'][:60]}'.")
            names.add(tool["name"])
        return tools

    def validate_tool_choice(self, choice):
        if not isinstance(choice, dict) or choice.get("type") not in TOOL_CHOICE_TYPES:
            _fail("tool_choice", 'Expected {"type": "auto" | "any" | "tool" | "none"}.')
        if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
            _fail("tool_choice.name", 'Required with {"type": "tool"}.')
        flag = choice.get("disable_parallel_tool_use")
        if flag is not None and not isinstance(flag, bool):
            _fail("tool_choice.disable_parallel_tool_use", "Expected a boolean.")
        return choice

    def validate_metadata(self, metadata):
        if not isinstance(metadata, dict):
            _fail("metadata", "Expected an object.")
        return metadata

    def validate_thinking(self, thinking):
        if not isinstance(thinking, dict) or thinking.get("type") not in THINKING_TYPES:
            _fail("thinking", 'Expected {"type": "enabled" | "disabled" | "adaptive"}.')
        budget = thinking.get("budget_tokens")
        if thinking["type"] == "enabled" and (
            isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
        ):
            _fail("thinking.budget_tokens", 'A positive integer, required with "enabled".')
        return thinking

    def validate_output_config(self, config):
        if not isinstance(config, dict):
            _fail("output_config", "Expected an object.")
        output_format = config.get("format")
        if output_format is not None:
            if not isinstance(output_format, dict) or output_format.get("type") != "json_schema":
                _fail("output_config.format", 'Expected {"type": "json_schema", "schema": {...}}.')
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": output_format.get("schema")},
            }
            try:
                validate_response_format(response_format)
            except serializers.ValidationError as exc:
                detail = exc.detail[0] if isinstance(exc.detail, list) else exc.detail
                _fail("output_config.format", str(detail).replace("json_schema.", ""))
        return config

    def validate_mcp_servers(self, servers):
        if servers:
            _fail(
                "mcp_servers",
                "MCP servers named in a request are not connected to: this server does not "
                "reach addresses a client names. Run MCP servers in the client (Claude Code "
                "does) and send their tools as tools.",
            )
        return servers


def _check_text_blocks(blocks: Any, *, where: str) -> None:
    if not isinstance(blocks, list):
        _fail(where, "Expected a string or a list of text blocks.")
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text":
            _fail(f"{where}[{index}]", "Expected a text block.")
        if not isinstance(block.get("text"), str):
            _fail(f"{where}[{index}].text", "Expected a string.")


def _check_message(message: Any, *, where: str) -> None:
    if not isinstance(message, dict):
        _fail(where, "Expected a message object with role and content.")
    role = message.get("role")
    if role not in ROLES:
        _fail(f"{where}.role", 'Expected "user", "assistant" or "system".')
    content = message.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        _fail(f"{where}.content", "Expected a string or a list of content blocks.")
    if role == "system":
        _check_text_blocks(content, where=f"{where}.content")
        return
    allowed = USER_BLOCKS if role == "user" else ASSISTANT_BLOCKS
    for index, block in enumerate(content):
        _check_block(block, allowed=allowed, role=role, where=f"{where}.content[{index}]")


def _check_block(block: Any, *, allowed: tuple[str, ...], role: str, where: str) -> None:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind in SERVER_TOOL_BLOCKS:
        _fail(
            f"{where}.type",
            f"'{kind}' blocks belong to Anthropic's server tools, which this server does not run.",
        )
    if kind not in allowed:
        _fail(f"{where}.type", f"A {role} message holds {', '.join(allowed)} blocks.")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            _fail(f"{where}.text", "Expected a string.")
    elif kind == "image":
        _check_image_source(block.get("source"), where=f"{where}.source")
    elif kind == "document":
        source = block.get("source")
        if not isinstance(source, dict) or source.get("type") != "text":
            _fail(
                f"{where}.source",
                'Only plain-text documents are accepted ({"type": "text", "data": ...}); '
                "send a PDF's text instead, as the models here do not read PDF files.",
            )
        if not isinstance(source.get("data"), str):
            _fail(f"{where}.source.data", "Expected a string.")
    elif kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            _fail(f"{where}.tool_use_id", "This field is required.")
        if "is_error" in block and not isinstance(block["is_error"], bool):
            _fail(f"{where}.is_error", "Expected a boolean.")
        content = block.get("content", "")
        if isinstance(content, list):
            for index, part in enumerate(content):
                _check_block(
                    part,
                    allowed=("text", "image"),
                    role="tool_result",
                    where=f"{where}.content[{index}]",
                )
        elif not isinstance(content, str):
            _fail(f"{where}.content", "Expected a string or a list of text and image blocks.")
    elif kind == "tool_use":
        if not isinstance(block.get("id"), str) or not block["id"]:
            _fail(f"{where}.id", "This field is required.")
        if not isinstance(block.get("name"), str) or not block["name"]:
            _fail(f"{where}.name", "This field is required.")
        if not isinstance(block.get("input"), dict):
            _fail(f"{where}.input", "Expected an object.")


def _check_image_source(source: Any, *, where: str) -> None:
    if not isinstance(source, dict) or source.get("type") != "base64":
        _fail(
            where,
            'Only base64 images are accepted ({"type": "base64", "media_type", "data"}); '
            "this server does not fetch URLs or read files.",
        )
    if source.get("media_type") not in IMAGE_MEDIA_TYPES:
        _fail(f"{where}.media_type", f"Expected one of {', '.join(IMAGE_MEDIA_TYPES)}.")
    data = source.get("data")
    if not isinstance(data, str) or not data:
        _fail(f"{where}.data", "Expected the image as base64 text.")
    if len(data) * 3 // 4 > MAX_IMAGE_BYTES:
        _fail(f"{where}.data", f"The image is larger than {MAX_IMAGE_BYTES} bytes.")


@extend_schema_serializer(component_name="AnthropicCountTokens")
class CountTokensRequestSerializer(MessagesRequestSerializer):
    """The same request, counted: `max_tokens` is not needed."""

    max_tokens = StrictIntegerField(required=False, min_value=1, max_value=MAX_TOKENS_LIMIT)
