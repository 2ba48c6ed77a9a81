"""Hostile client JSON Schemas, shared by the fuzz run, the soak, the security tests and bench/."""

import json


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "hostile", "schema": schema}}


_nested: dict = {"type": "object"}
for _ in range(300):
    _nested = {"type": "object", "properties": {"a": _nested}}

# Each must be refused with 400 before any model call, and quoted briefly.
HOSTILE_RESPONSE_FORMATS = [
    schema_format({"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}}),
    schema_format({"$ref": "http://169.254.169.254/latest/meta-data/"}),
    schema_format({"$ref": "#"}),
    schema_format({"allOf": [{"$ref": "#"}]}),
    schema_format({"properties": {"a": {"$ref": "#/$defs/missing"}}}),
    schema_format({"properties": {"a": {"pattern": "(?=a)b"}}}),
    schema_format({"patternProperties": {"(a)\\1": {}}}),
    schema_format({"properties": {"a": {"pattern": "a" * 100_000}}}),
    schema_format(_nested),
]


def doubling_schema(levels: int) -> dict:
    """Items through a chain of `levels` definitions, each applying the next one twice."""
    fan_out: dict = {
        f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(1, levels)
    }
    fan_out[f"d{levels}"] = {"type": "integer"}
    return {
        "type": "object",
        "properties": {"a": {"type": "array", "items": {"$ref": "#/$defs/d1"}}},
        "$defs": fan_out,
    }


# The worst schema inspect_schema accepts: allOf doubling 8 times, 509 subschemas per value.
COSTLY_SCHEMA = doubling_schema(8)
COSTLY_ANSWER = json.dumps({"a": [1] * 300_000})
