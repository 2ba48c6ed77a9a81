"""The catalog as the settings describe it: seed variables alone, and with a catalog file."""

from __future__ import annotations

import copy

import pytest
from django.conf import settings as django_settings

from inference.catalog import CatalogError
from inference.catalog.loader import load_catalog

FILE = """\
models:
  big:
    servers: [http://gpu-1:8000/v1]
    aliases: [chat]
    fallbacks: [small]
  small:
    servers: [http://cpu-1:8080]
"""


@pytest.fixture
def seed(settings):
    settings.LLMAPI_MODELS = copy.deepcopy(django_settings.LLMAPI_MODELS)
    settings.LLMAPI_MODELS["text"].update(base_url="", model_name="")
    settings.LLMAPI_MODELS["image"].update(base_url="", model_name="")
    settings.LLMAPI_MODELS_FILE = ""
    settings.LOCAL_MODEL = {**django_settings.LOCAL_MODEL, "enabled": True}
    return settings


def test_seed_variables_alone_give_the_embedded_text_model_and_no_image_model(seed):
    catalog = load_catalog()
    assert catalog.names == ["smollm2-135m-instruct"]
    assert catalog.text is not None and catalog.text.is_embedded
    assert catalog.text.setting("timeout") == "TEXT_MODEL__TIMEOUT"
    assert catalog.image is None


def test_seed_servers_give_a_text_and_an_image_model_with_replicas(seed):
    seed.LLMAPI_MODELS["text"].update(base_url="http://a:1, http://b:2", model_name="llm")
    seed.LLMAPI_MODELS["image"].update(base_url="http://c:3/v1", model_name="vlm")
    catalog = load_catalog()
    assert catalog.names == ["llm", "vlm"]
    assert catalog.text.servers == ("http://a:1", "http://b:2")
    assert catalog.image.has("vision")
    assert catalog.resolve("vlm", capability="vision") is catalog.image


def test_one_name_for_the_text_and_image_models_resolves_by_capability(seed):
    seed.LLMAPI_MODELS["text"].update(base_url="http://a:1", model_name="qwen-vl")
    seed.LLMAPI_MODELS["image"].update(base_url="http://a:1", model_name="qwen-vl")
    catalog = load_catalog()
    assert catalog.names == ["qwen-vl"]
    assert catalog.resolve("qwen-vl") is catalog.text
    assert catalog.resolve("qwen-vl", capability="vision") is catalog.image


def test_a_catalog_file_adds_models_and_keeps_the_seed_defaults(seed, tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(FILE)
    seed.LLMAPI_MODELS["text"].update(base_url="http://a:1", model_name="llm")
    seed.LLMAPI_MODELS_FILE = str(path)
    catalog = load_catalog()
    assert catalog.names == ["llm", "big", "small"]
    assert catalog.text.name == "llm"
    assert catalog.resolve("chat").name == "big"
    assert [spec.name for spec in catalog.fallbacks_of(catalog.resolve("big"))] == ["small"]


def test_the_files_default_text_model_replaces_the_implicit_embedded_one(seed, tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("default_text_model: big\n" + FILE)
    seed.LLMAPI_MODELS_FILE = str(path)
    catalog = load_catalog()
    assert catalog.names == ["big", "small"]
    assert catalog.text.name == "big"


def test_a_file_model_may_not_take_a_seed_models_name(seed, tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(FILE)
    seed.LLMAPI_MODELS["text"].update(base_url="http://a:1", model_name="big")
    seed.LLMAPI_MODELS_FILE = str(path)
    with pytest.raises(CatalogError, match="'big'.*already used by TEXT_MODEL"):
        load_catalog()


def test_an_unknown_default_model_is_refused(seed, tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("default_image_model: ghost\n" + FILE)
    seed.LLMAPI_MODELS_FILE = str(path)
    with pytest.raises(CatalogError, match="default_image_model: 'ghost'"):
        load_catalog()


def test_the_seed_routing_is_checked(seed):
    seed.LLMAPI_MODELS["text"].update(base_url="http://a:1,http://b:2", routing="Least_Busy")
    assert load_catalog().text.routing_mode == "least_busy"
    seed.LLMAPI_MODELS["text"].update(routing="sticky")
    with pytest.raises(CatalogError, match="TEXT_MODEL__ROUTING must be prefix"):
        load_catalog()
