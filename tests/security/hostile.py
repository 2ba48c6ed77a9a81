"""Hostile client JSON Schemas, shared by the fuzz run, the soak and the security tests."""


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
