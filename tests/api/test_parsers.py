import io

import pytest
from rest_framework.exceptions import ParseError

from api.parsers import JSONParser, loads_bounded
from infra.json_depth import json_depth


def parse(raw: bytes):
    return JSONParser().parse(io.BytesIO(raw))


def test_body_parses_like_json():
    assert parse(b'{"messages": [{"role": "user", "content": "hi \\u00e9"}]}') == {
        "messages": [{"role": "user", "content": "hi é"}]
    }


@pytest.mark.parametrize("depth", [65, 1000, 5000, 100_000])
def test_deeply_nested_body_is_a_parse_error_not_a_recursion_error(depth):
    with pytest.raises(ParseError) as caught:
        parse(b"[" * depth + b"]" * depth)
    assert "deep" in str(caught.value.detail) or "depth" in str(caught.value.detail)


def test_body_at_the_depth_limit_is_accepted():
    assert json_depth(parse(b"[" * 64 + b"]" * 64), 64) == 64


@pytest.mark.parametrize("raw", [b"{", b"NaN", b'{"a": Infinity}', b"\xff"])
def test_invalid_json_is_a_parse_error(raw):
    with pytest.raises(ParseError):
        parse(raw)


def test_parse_error_does_not_repeat_the_body():
    with pytest.raises(ValueError) as caught:
        loads_bounded(b'{"a": "' + b"x" * 100_000 + b'" oops}')
    assert len(str(caught.value)) < 300


def test_json_depth_counts_lists_and_objects():
    assert json_depth(1, 10) == 0
    assert json_depth({"a": [1, {"b": []}]}, 10) == 4
    assert json_depth([[[[[]]]]], 2) == 3  # stops counting past the limit
