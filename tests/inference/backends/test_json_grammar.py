import json
import re

import pytest

from inference.backends.json_grammar import (
    JSON_CHAR_RULE,
    UnsupportedSchema,
    integer_bounds,
    integer_range_rule,
    schema_grammar,
)
from tests.inference.test_structured import REVIEW_SCHEMA


def as_regex(rule: str) -> re.Pattern[str]:
    """The integer-range rules only use quoted digits, digit classes and {n}: a regex too."""
    pattern = re.sub(r'"(-|\d)"', r"\1", rule).replace(" ", "")
    return re.compile(f"(?:{pattern})")


@pytest.mark.parametrize(
    ("low", "high"),
    [(1, 5), (0, 0), (-5, 5), (-123, -7), (10, 99), (7, 1234), (95, 105), (199, 200), (0, 10**6)],
)
def test_integer_range_rule_matches_exactly_the_range(low, high):
    pattern = as_regex(integer_range_rule(low, high))
    for number in range(min(low - 150, -3), max(high, 1500) + 150, 1 if high < 10**4 else 997):
        assert bool(pattern.fullmatch(str(number))) == (low <= number <= high), number
    assert not pattern.fullmatch("01")
    assert not pattern.fullmatch("-0")


def test_integer_bounds_read_exclusive_and_fractional_limits():
    assert integer_bounds({"minimum": 1, "maximum": 5}) == (1, 5)
    assert integer_bounds({"exclusiveMinimum": 0, "exclusiveMaximum": 10}) == (1, 9)
    assert integer_bounds({"minimum": 0.5, "maximum": 4.5}) == (1, 4)
    assert integer_bounds({"minimum": 3})[1] == 10**16 - 1


def test_empty_integer_range_is_unsupported():
    with pytest.raises(UnsupportedSchema):
        integer_bounds({"minimum": 5, "maximum": 1})


def test_review_schema_grammar_enforces_range_enum_keys_and_escaped_strings():
    grammar = schema_grammar(REVIEW_SCHEMA)
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    assert rules["rating"] == "([1-5]) space"
    assert rules["sentiment"] == '"\\"positive\\"" | "\\"negative\\"" | "\\"neutral\\""'
    root = rules["root"]
    assert root.index("sentiment-kv") < root.index("rating-kv") < root.index("summary-kv")
    assert "?" not in root  # all three keys are required, none optional, no others
    assert rules["char"] == JSON_CHAR_RULE
    assert "\\x00-\\x1F" in rules["char"]  # no raw newline or other control character
    assert rules["space"] == '" "?'


def test_literals_escape_backslashes():
    grammar = schema_grammar({"type": "string", "enum": ["a\\b"]})
    assert json.dumps("a\\b").replace("\\", "\\\\").replace('"', '\\"') in grammar


def test_unsupported_schema_is_reported_not_crashed():
    with pytest.raises(UnsupportedSchema):
        schema_grammar({"type": "integer", "minimum": 9, "maximum": 1})
    with pytest.raises(UnsupportedSchema):
        schema_grammar({"$ref": "https://example.com/schema.json"})
