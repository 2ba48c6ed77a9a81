import hashlib

import pytest

from inference import services
from inference.backends import embedded as local_model
from inference.backends import json_grammar
from inference.backends.embedded import (
    LocalModelError,
    check_model_file,
    repeating_block,
    response_format_grammar,
)
from inference.exceptions import ModelNotConfigured
from inference.registry import get_registry


def gguf(tmp_path, body=b"GGUF" + b"\0" * 64):
    path = tmp_path / "model.gguf"
    path.write_bytes(body)
    return path, hashlib.sha256(body).hexdigest()


def test_the_whole_file_is_hashed_and_a_match_is_remembered(tmp_path):
    body = b"GGUF" + b"\0" * 3 * 1024 * 1024  # beyond the first block read
    path, digest = gguf(tmp_path, body)
    check_model_file(path, digest)
    assert (path, digest) in local_model._checked  # the server's process does not hash it again
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(body[:-1] + b"\1")  # its last byte only
    with pytest.raises(LocalModelError, match="corrupted"):
        check_model_file(damaged, digest)


def test_wrong_hash_names_path_and_is_clear(tmp_path):
    path, _ = gguf(tmp_path)
    with pytest.raises(LocalModelError) as caught:
        check_model_file(path, "0" * 64)
    assert str(path) in str(caught.value) and "corrupted" in str(caught.value)


def test_missing_file_names_path_and_variable(tmp_path):
    with pytest.raises(LocalModelError) as caught:
        check_model_file(tmp_path / "absent.gguf", None)
    assert "absent.gguf" in str(caught.value) and "LOCAL_MODEL__PATH" in str(caught.value)


def test_non_gguf_file_is_refused(tmp_path):
    path, _ = gguf(tmp_path, body=b"<html>not a model</html>")
    with pytest.raises(LocalModelError, match="not a GGUF"):
        check_model_file(path, None)


def test_configured_path_is_used_without_hash(settings, tmp_path):
    settings.LOCAL_MODEL = {**settings.LOCAL_MODEL, "path": str(tmp_path / "mine.gguf")}
    assert local_model.resolve_model_path() == (tmp_path / "mine.gguf", None)


def test_default_path_is_the_packaged_model_with_its_hash(settings):
    settings.LOCAL_MODEL = {**settings.LOCAL_MODEL, "path": ""}
    path, digest = local_model.resolve_model_path()
    assert path.name == local_model.PACKAGED_MODEL_FILE
    assert digest == local_model.PACKAGED_MODEL_SHA256


def test_no_base_url_selects_the_local_model_by_default(settings):
    settings.LLMAPI_MODELS = {
        **settings.LLMAPI_MODELS,
        "text": {**settings.LLMAPI_MODELS["text"], "base_url": "", "model_name": ""},
    }
    text = get_registry().catalog.text
    assert text.is_embedded
    assert text.name == "smollm2-135m-instruct"


def test_unloadable_local_model_is_a_503_naming_the_variable(settings, tmp_path, monkeypatch):
    settings.LLMAPI_MODELS = {
        **settings.LLMAPI_MODELS,
        "text": {**settings.LLMAPI_MODELS["text"], "base_url": ""},
    }
    settings.LOCAL_MODEL = {**settings.LOCAL_MODEL, "path": str(tmp_path / "absent.gguf")}
    with pytest.raises(ModelNotConfigured) as caught:
        services.get_backend(get_registry().catalog.text)
    assert "LOCAL_MODEL__PATH" in str(caught.value.detail)


def test_json_schema_format_becomes_the_schema_grammar():
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}}
    grammar = response_format_grammar({"type": "json_schema", "json_schema": {"schema": schema}})
    assert grammar == json_grammar.schema_grammar(schema)


def test_json_object_and_inexpressible_schemas_get_the_any_object_grammar():
    impossible = {"type": "integer", "minimum": 2, "maximum": 1}
    assert response_format_grammar({"type": "json_object"}) == json_grammar.JSON_OBJECT_GBNF
    assert (
        response_format_grammar({"type": "json_schema", "json_schema": {"schema": impossible}})
        == json_grammar.JSON_OBJECT_GBNF
    )
    assert response_format_grammar({"type": "text"}) is None


def test_a_block_repeated_three_times_is_a_loop():
    line = list(range(100, 120))  # a 20-token line
    assert repeating_block([1, 2, 3] + line * 3)
    assert not repeating_block([1, 2, 3] + line * 2)


def test_short_repeats_need_more_copies_before_they_count():
    assert not repeating_block([7, 8] * 3)  # "ha ha ha": 6 tokens is not a loop yet
    assert repeating_block([5] + [7, 8] * 16)


def test_varied_text_is_not_a_loop():
    assert not repeating_block(list(range(600)))
    assert not repeating_block([1, 2, 3, 1, 2, 4, 1, 2, 3, 1, 2, 4, 9] * 2)
