"""The catalog file: YAML parsed into models, with errors that name the line and the field."""

from __future__ import annotations

import pytest

from inference.catalog import CatalogError, build_catalog
from inference.catalog.file import parse_catalog, read_catalog_file

THREE_MODELS = """\
default_text_model: big
models:
  big:
    servers: [http://gpu-1:8000/v1, http://gpu-2:8000/v1]
    upstream_name: meta-llama/Llama-3.1-8B-Instruct
    aliases: [chat, default]
    capabilities: [chat, tools]
    max_concurrency: 32
    params: {temperature: 0.2, max_tokens: 1024}
    fallbacks: [small]
  small:
    servers: [http://cpu-1:8080]
    timeout: 30
  vision:
    servers: [http://gpu-3:8000/v1]
    capabilities: [chat, vision]
"""


def test_three_models_with_aliases_defaults_and_fallbacks_are_read():
    specs, default_text, default_image = parse_catalog(THREE_MODELS, source="models.yaml")
    assert [spec.name for spec in specs] == ["big", "small", "vision"]
    big = specs[0]
    assert big.servers == ("http://gpu-1:8000/v1", "http://gpu-2:8000/v1")
    assert big.served_name == "meta-llama/Llama-3.1-8B-Instruct"
    assert big.aliases == ("chat", "default")
    assert big.capabilities == {"chat", "tools"}
    assert big.defaults["temperature"] == 0.2
    assert big.defaults["max_tokens"] == 1024
    assert big.defaults["top_p"] == 1.0  # unset parameters keep the seed defaults
    assert big.fallbacks == ("small",)
    assert big.setting("timeout") == "models.yaml: models.big.timeout"
    assert specs[1].timeout == 30
    assert specs[1].served_name == "small"
    assert default_text == "big"
    assert default_image is None


def test_an_out_of_range_field_is_reported_with_its_line():
    text = THREE_MODELS.replace("max_concurrency: 32", "max_concurrency: 0")
    with pytest.raises(CatalogError) as error:
        parse_catalog(text, source="models.yaml")
    assert "models.yaml, line 8: models.big.max_concurrency:" in str(error.value)
    assert "greater than or equal to 1" in str(error.value)


def test_an_unknown_field_is_reported_with_its_line():
    text = THREE_MODELS.replace("    timeout: 30", "    timeuot: 30")
    with pytest.raises(CatalogError) as error:
        parse_catalog(text, source="models.yaml")
    assert "models.yaml, line 13: models.small.timeuot: unknown field" in str(error.value)


def test_a_yaml_syntax_error_names_its_line():
    with pytest.raises(CatalogError) as error:
        parse_catalog("models:\n  a: [unclosed\n  b: 1\n", source="m.yaml")
    assert "m.yaml, line" in str(error.value)
    assert "not valid YAML" in str(error.value)


def test_an_openai_model_without_servers_is_refused():
    with pytest.raises(CatalogError) as error:
        parse_catalog("models:\n  lonely: {}\n", source="m.yaml")
    assert "m.yaml, line 2: models.lonely.servers: an openai model needs a server" in str(
        error.value
    )


def test_yaml_tags_are_not_constructed():
    with pytest.raises(CatalogError):
        parse_catalog("models: !!python/object/apply:os.system ['true']\n", source="m.yaml")


def test_the_upstream_key_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("GPU_KEY", "sk-from-env")
    specs, _, _ = parse_catalog(
        "models:\n  m:\n    servers: [http://h:1]\n    api_key_env: GPU_KEY\n", source="m.yaml"
    )
    assert specs[0].api_key == "sk-from-env"
    assert "sk-from-env" not in repr(specs[0])


def test_a_missing_key_variable_is_refused(monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(CatalogError, match="NOPE_KEY is not set"):
        parse_catalog(
            "models:\n  m:\n    servers: [http://h:1]\n    api_key_env: NOPE_KEY\n", source="m"
        )


def test_an_unreadable_file_names_the_variable(tmp_path):
    with pytest.raises(CatalogError, match="LLMAPI_MODELS_FILE"):
        read_catalog_file(tmp_path / "missing.yaml")


def test_fallbacks_must_name_models_of_the_catalog():
    specs, _, _ = parse_catalog(
        "models:\n  a:\n    servers: [http://h:1]\n    fallbacks: [ghost]\n", source="m.yaml"
    )
    with pytest.raises(CatalogError, match="'ghost' is not a model"):
        build_catalog(specs, text=None, image=None, source="m.yaml")


def test_duplicate_aliases_are_refused():
    specs, _, _ = parse_catalog(
        "models:\n  a:\n    servers: [http://h:1]\n    aliases: [x]\n"
        "  b:\n    servers: [http://h:2]\n    aliases: [x]\n",
        source="m.yaml",
    )
    with pytest.raises(CatalogError, match="'x'.*already used"):
        build_catalog(specs, text=None, image=None, source="m.yaml")


def test_a_deeply_nested_file_is_refused_with_its_line_not_a_recursion_error():
    text = "models:\n  a:\n    servers: [http://h:1]\n    params: " + "[" * 20_000 + "]" * 20_000
    with pytest.raises(CatalogError) as error:
        parse_catalog(text, source="models.yaml")
    assert str(error.value).startswith("models.yaml, line 4: nested more than 16 levels deep")


def test_a_deeply_nested_block_file_is_refused_with_its_line():
    text = "models:\n" + "".join("  " * depth + f"k{depth}:\n" for depth in range(1, 40))
    with pytest.raises(CatalogError) as error:
        parse_catalog(text, source="models.yaml")
    assert "models.yaml, line 17: nested more than 16 levels deep" in str(error.value)


def test_a_nested_file_of_the_usual_depth_is_read():
    specs, _, _ = parse_catalog(THREE_MODELS, source="models.yaml")
    assert len(specs) == 3


def test_a_file_larger_than_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import inference.catalog.file as catalog_file

    monkeypatch.setattr(catalog_file, "MAX_CATALOG_BYTES", 1024)
    path = tmp_path / "models.yaml"
    path.write_text(THREE_MODELS + "#" * 2000 + "\n")
    with pytest.raises(CatalogError) as error:
        read_catalog_file(path)
    assert str(error.value).startswith(f"{path}: is ")
    assert "more than the 1024 a catalog may hold" in str(error.value)


def test_routing_is_read_and_defaults_to_prefix_with_several_servers():
    text = THREE_MODELS.replace("    timeout: 30\n", "    timeout: 30\n    routing: round_robin\n")
    specs, _, _ = parse_catalog(text, source="models.yaml")
    by_name = {spec.name: spec for spec in specs}
    assert by_name["big"].routing_mode == "prefix"
    assert by_name["small"].routing_mode == "round_robin"
    assert by_name["vision"].routing_mode == "least_busy"  # one server: nothing to place


def test_an_unknown_routing_is_reported_with_its_line():
    text = THREE_MODELS.replace("    timeout: 30\n", "    timeout: 30\n    routing: sticky\n")
    with pytest.raises(CatalogError, match=r"models.yaml, line 14: models.small.routing"):
        parse_catalog(text, source="models.yaml")
