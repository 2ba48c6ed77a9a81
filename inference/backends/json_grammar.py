"""
GBNF grammars that make the embedded model write JSON a client asked for.

llama-cpp-python 0.3.36 bundles an old port of llama.cpp's JSON-Schema-to-GBNF converter. It
ignores `minimum`/`maximum` on integers (the README's review schema came back with rating 10),
lets raw control characters such as newlines into strings (invalid JSON), and does not escape
backslashes in literals. `SchemaGrammar` extends that converter with what the gateway needs:

* integer ranges (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`) as alternations
  of digit patterns, the way llama.cpp's own converter does it;
* strings whose characters are JSON-legal (no raw control characters, escapes only);
* literals with backslashes escaped.

Enums, `const`, required keys and nested objects/arrays come from the bundled converter. The
whitespace between tokens is at most one space, so a model cannot run away in indentation. A
schema the converter cannot express raises `UnsupportedSchema`; the caller then falls back to
any-JSON-object grammar and the gateway's own validation. The subclass leans on the converter's
internals, which is why llama-cpp-python is pinned and tests/inference/backends/test_json_grammar.py
checks the grammar text.
"""

from __future__ import annotations

import atexit
import json
import math
from typing import Any

from llama_cpp import _utils as llama_cpp_utils
from llama_cpp import llama_grammar


def _close_llama_cpp_null_files() -> None:
    """
    llama-cpp-python opens two /dev/null files when it is imported and never closes them;
    Python then reports them as unclosed (ResourceWarning) when the process exits.
    """
    for handle in (llama_cpp_utils.outnull_file, llama_cpp_utils.errnull_file):
        handle.close()


atexit.register(_close_llama_cpp_null_files)

# Any JSON object, for `{"type": "json_object"}`. llama-cpp-python's JSON_GBNF, with whitespace
# cut to at most one space, so a small model cannot spend its whole budget on newlines.
JSON_OBJECT_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? ws
ws     ::= " "?
"""

# Characters allowed inside a JSON string: anything but a quote, a backslash or a control
# character, or one of JSON's escapes.
JSON_CHAR_RULE = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'

# Integers with one open end get this many digits at most (as the bundled `integer` rule).
MAX_INTEGER_DIGITS = 16

_LITERAL_ESCAPES = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", '"': '\\"'}


class UnsupportedSchema(ValueError):
    """The schema uses something the grammar converter cannot express."""


class SchemaGrammar(llama_grammar.SchemaConverter):
    def __init__(self) -> None:
        # No remote $ref is ever fetched: the schema is client data.
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)

    def _format_literal(self, literal: str) -> str:
        return '"' + "".join(_LITERAL_ESCAPES.get(char, char) for char in literal) + '"'

    def _add_primitive(self, name: str, rule: llama_grammar.BuiltinRule) -> str:
        if name == "char":
            rule = llama_grammar.BuiltinRule(JSON_CHAR_RULE, [])
        key = self._add_rule(name, rule.content)
        for dep in rule.deps:
            dep_rule = llama_grammar.PRIMITIVE_RULES.get(
                dep
            ) or llama_grammar.STRING_FORMAT_RULES.get(dep)
            if dep_rule is None:
                raise UnsupportedSchema(f"no grammar rule for {dep}")
            if dep not in self._rules:
                self._add_primitive(dep, dep_rule)
        return key

    def visit(self, schema: Any, name: str) -> str:
        if not isinstance(schema, dict):
            raise UnsupportedSchema("a schema must be an object")
        bounds = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        if schema.get("type") == "integer" and any(key in schema for key in bounds):
            low, high = integer_bounds(schema)
            rule_name = name + "-" if name in llama_grammar.RESERVED_NAMES else name or "root"
            return self._add_rule(rule_name, f"({integer_range_rule(low, high)}) space")
        return super().visit(schema, name)


def schema_grammar(schema: dict[str, Any]) -> str:
    """The GBNF grammar for JSON that validates against `schema` (refs already local)."""
    converter = SchemaGrammar()
    try:
        resolved = converter.resolve_refs(schema, "schema")
        converter.visit(resolved, "")
    except UnsupportedSchema:
        raise
    except (AssertionError, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise UnsupportedSchema(str(exc) or type(exc).__name__) from None
    return converter.format_grammar()


def integer_bounds(schema: dict[str, Any]) -> tuple[int, int]:
    """The inclusive integer range a schema allows; an open end gets MAX_INTEGER_DIGITS digits."""
    widest = 10**MAX_INTEGER_DIGITS - 1
    low, high = -widest, widest
    try:
        if isinstance(schema.get("minimum"), int | float):
            low = max(low, math.ceil(schema["minimum"]))
        if isinstance(schema.get("exclusiveMinimum"), int | float):
            low = max(low, math.floor(schema["exclusiveMinimum"]) + 1)
        if isinstance(schema.get("maximum"), int | float):
            high = min(high, math.floor(schema["maximum"]))
        if isinstance(schema.get("exclusiveMaximum"), int | float):
            high = min(high, math.ceil(schema["exclusiveMaximum"]) - 1)
    except (OverflowError, ValueError):  # inf or nan
        raise UnsupportedSchema("integer bounds must be finite") from None
    if low > high:
        raise UnsupportedSchema(f"no integer lies between {low} and {high}")
    return low, high


def integer_range_rule(low: int, high: int) -> str:
    """A GBNF alternation matching exactly the integers low..high, written the JSON way."""
    alternatives: list[str] = []
    if low < 0:
        negatives = _natural_range(max(1, -high), -low)
        alternatives += [f'"-" {alternative}' for alternative in negatives]
    if high >= 0:
        alternatives += _natural_range(max(0, low), high)
    return " | ".join(alternatives)


def _natural_range(low: int, high: int) -> list[str]:
    """Alternatives for low..high (0 <= low <= high), one digit count at a time."""
    alternatives: list[str] = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        first = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        last = min(high, 10**digits - 1)
        if first <= last:
            alternatives += _same_length_range(str(first), str(last))
    return alternatives


def _same_length_range(low: str, high: str) -> list[str]:
    """Digit patterns for the numbers low..high, both written with the same number of digits."""
    if not low:
        return []
    rest = len(low) - 1
    if low[0] == high[0]:
        tails = _same_length_range(low[1:], high[1:]) or [""]
        return [_join(json.dumps(low[0]), tail) for tail in tails]
    patterns: list[str] = []
    low_is_round, high_is_round = low[1:] == "0" * rest, high[1:] == "9" * rest
    # The numbers that start with low[0] but are not all of them ...
    if not low_is_round:
        patterns += [_join(json.dumps(low[0]), t) for t in _same_length_range(low[1:], "9" * rest)]
    # ... then every number for the first digits in between, any digits after ...
    first = low[0] if low_is_round else chr(ord(low[0]) + 1)
    last = high[0] if high_is_round else chr(ord(high[0]) - 1)
    if first <= last:
        patterns.append(_join(f"[{first}-{last}]", f"[0-9]{{{rest}}}" if rest else ""))
    # ... then the ones that start with high[0].
    if not high_is_round:
        patterns += [
            _join(json.dumps(high[0]), t) for t in _same_length_range("0" * rest, high[1:])
        ]
    return patterns


def _join(head: str, tail: str) -> str:
    return f"{head} {tail}" if tail else head
