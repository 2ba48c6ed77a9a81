"""
Structured output the gateway can vouch for.

Model servers honour `response_format` unevenly (some ignore `json_schema`, grammars skip
`minimum`/`maximum`, small models drift), so the gateway validates every JSON answer itself:
`json_object` must parse as a JSON object, `json_schema` must also validate against the schema
(Draft 2020-12 unless the schema's `$schema` says otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson
from jsonschema import Draft202012Validator
from typing_extensions import TypeIs

MAX_REPORTED_ERRORS = 10
_FENCE = re.compile(r"^```(?:json|JSON)?\s*\n(.*?)\n?```$", re.DOTALL)


@dataclass(frozen=True)
class OutputCheck:
    valid: bool
    text: str  # the JSON text (without a Markdown fence a model may have wrapped it in)
    parsed: Any = None
    errors: list[dict[str, str]] = field(default_factory=list)


def wants_json(response_format: dict | None) -> TypeIs[dict]:
    if not response_format:
        return False
    return response_format.get("type") in ("json_object", "json_schema")


def schema_of(response_format: dict) -> dict | None:
    if response_format.get("type") == "json_schema":
        return response_format["json_schema"]["schema"]
    return None


def schema_validator_class(schema: dict) -> type[jsonschema.protocols.Validator]:
    """The validator for the schema's `$schema` dialect, Draft 2020-12 when it names none."""
    return jsonschema.validators.validator_for(schema, default=Draft202012Validator)


def check_output(text: str, response_format: dict) -> OutputCheck:
    """Check a model's answer against the requested JSON format."""
    candidate = text.strip()
    fenced = _FENCE.match(candidate)
    if fenced:
        candidate = fenced.group(1).strip()
    try:
        parsed = orjson.loads(candidate)
    except orjson.JSONDecodeError as exc:
        return OutputCheck(False, text, errors=[{"path": "$", "message": f"Not valid JSON: {exc}"}])
    if not isinstance(parsed, dict):
        return OutputCheck(
            False, text, errors=[{"path": "$", "message": "Expected a JSON object."}]
        )
    schema = schema_of(response_format)
    if schema is not None:
        validator_class = schema_validator_class(schema)
        validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
        errors = sorted(validator.iter_errors(parsed), key=lambda e: list(e.absolute_path))
        if errors:
            return OutputCheck(
                False,
                candidate,
                parsed=parsed,
                errors=[
                    {"path": error.json_path, "message": error.message}
                    for error in errors[:MAX_REPORTED_ERRORS]
                ],
            )
    return OutputCheck(True, candidate, parsed=parsed)


def describe_errors(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{error['path']}: {error['message']}" for error in errors)


def repair_messages(
    messages: list[dict[str, Any]], *, output: str, check: OutputCheck, response_format: dict
) -> list[dict[str, Any]]:
    """The conversation again, with the invalid answer and what is wrong with it."""
    instruction = (
        "Your previous answer is not valid. Errors: "
        f"{describe_errors(check.errors)}. Reply with only the corrected JSON object"
    )
    schema = schema_of(response_format)
    if schema is not None:
        instruction += " that follows this JSON Schema: " + orjson.dumps(schema).decode()
    return [
        *messages,
        {"role": "assistant", "content": output},
        {"role": "user", "content": instruction + "."},
    ]


def schema_prompt_format(response_format: dict, messages: list[dict[str, Any]]):
    """
    The fallback for servers that refuse `json_schema`: plain JSON mode, and the schema in a
    system message. Returns (response_format, messages).
    """
    schema = orjson.dumps(schema_of(response_format)).decode()
    system = {
        "role": "system",
        "content": "Answer with a single JSON object that follows this JSON Schema exactly, and "
        f"nothing else: {schema}",
    }
    return {"type": "json_object"}, [system, *messages]
