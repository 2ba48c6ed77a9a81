"""Model name patterns (LLMAPI_MODEL_PATTERNS): names no model or alias has, mapped in order."""

import pytest

from inference.catalog import CatalogError, ModelSpec, build_catalog

CODER = ModelSpec(name="coder", backend="openai", servers=("http://a/v1",), aliases=("big",))
SMALL = ModelSpec(name="small", backend="openai", servers=("http://b/v1",))
PATTERNS = (("claude-*haiku*", "small"), ("claude-*", "big"))


def catalog(patterns=PATTERNS):
    return build_catalog([CODER, SMALL], text=CODER, image=None, source="t", patterns=patterns)


def test_names_and_aliases_come_before_patterns_tried_in_order():
    found = catalog()
    assert found.resolve("coder") is CODER
    assert found.resolve("big") is CODER
    assert found.resolve("claude-haiku-4-5") is SMALL
    assert found.resolve("claude-opus-5-5") is CODER
    assert found.resolve("gpt-9") is None


def test_a_pattern_onto_a_missing_model_is_a_catalog_error():
    with pytest.raises(CatalogError, match="LLMAPI_MODEL_PATTERNS: 'claude-\\*=gone'"):
        catalog(patterns=(("claude-*", "gone"),))
