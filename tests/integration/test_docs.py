"""The docs pages render from the gateway itself, with no CDN."""

import re
from http import HTTPStatus
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

from playground.views import REDOC_BUNDLE, REDOC_CDN_LOGO

CDN_HOSTS = ("cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com", "fonts.googleapis.com")


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_page_is_public_and_uses_only_local_assets(gateway, path):
    with gateway.client(key=None) as client:
        page = client.get(path)
        assert page.status_code == HTTPStatus.OK
        assert not any(host in page.text for host in CDN_HOSTS)
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets, "the page loads its assets"
        for asset in assets:
            assert asset.startswith("/"), asset
            response = client.get(asset)
            assert response.status_code == HTTPStatus.OK, asset
            assert not any(host in response.text[:200000] for host in CDN_HOSTS if "fonts" in host)


def test_schema_documents_key_parameters_and_streaming(gateway):
    with gateway.client(key=None) as client:
        schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schema["components"]["securitySchemes"]["ApiKeyAuth"]["description"],
    }
    params = schema["components"]["schemas"]["TextChatRequest"]["properties"]
    assert params["temperature"]["minimum"] == 0 and params["temperature"]["maximum"] == 2
    assert "Randomness" in params["temperature"]["description"]
    stream = schema["paths"]["/text_model/chat/stream"]["post"]["responses"]["200"]["content"]
    assert {"text/plain", "text/event-stream"} <= set(stream)
    completion = schema["paths"]["/text_model/chat/completion"]["post"]
    assert {"400", "401", "403", "429", "502", "503", "504"} <= set(completion["responses"])
    assert "tokens" in schema["info"]["description"]


def test_browsable_api_renders_for_json_endpoints(gateway):
    with gateway.client() as client:
        page = client.get("/text_model/chat/completion", headers={"Accept": "text/html"})
    assert page.status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert "<form" in page.text and "Text Chat Completion" in page.text


def test_openai_endpoints_have_their_own_tag_with_an_sdk_example(gateway):
    with gateway.client(key=None) as client:
        schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/v1/chat/completions"]["post"]
    assert operation["tags"] == ["OpenAI-compatible"]
    assert "from openai import OpenAI" in operation["description"]


def test_schema_component_names_are_not_doubled(gateway):
    with gateway.client(key=None) as client:
        names = set(client.get("/openapi.json").json()["components"]["schemas"])
    assert {"TextChatRequest", "ImageChatRequest", "OpenAIChatRequest"} <= names
    assert [name for name in names if name.endswith("RequestRequest")] == []


def test_descriptions_show_the_address_the_schema_was_fetched_from(gateway):
    with gateway.client(key=None) as client:
        schema = client.get("/openapi.json").json()
        elsewhere = client.get("/openapi.json", headers={"Host": "api.example.org:8443"})
    assert f"curl -X POST {gateway.url}/text_model/chat/completion" in schema["info"]["description"]
    openai_tag = next(tag for tag in schema["tags"] if tag["name"] == "OpenAI-compatible")
    assert f"`{gateway.url}/v1`" in openai_tag["description"]
    assert "<host>" not in openai_tag["description"]
    operation = schema["paths"]["/v1/chat/completions"]["post"]
    assert f'base_url="{gateway.url}/v1"' in operation["description"]
    assert "localhost:1999" not in str(schema)
    # A host not in ALLOWED_HOSTS is refused (tests/server/test_allowed_hosts.py has one that is).
    assert elsewhere.status_code == 400
    assert "ALLOWED_HOSTS" in elsewhere.json()["detail"]


def test_redoc_bundle_points_its_logo_here(gateway):
    with gateway.client(key=None) as client:
        bundle = client.get("/redoc/redoc.standalone.js")
        logo = client.get("/static/playground/redoc-logo.svg")
    assert bundle.status_code == HTTPStatus.OK
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert "cdn.redoc.ly" not in bundle.text
    assert "/static/playground/redoc-logo.svg" in bundle.text
    assert logo.status_code == HTTPStatus.OK and logo.text.startswith("<svg")


def test_sidecar_redoc_bundle_still_names_the_cdn_logo():
    """Fails when an upgraded ReDoc moves its logo: the rewrite would then do nothing."""
    path = finders.find(REDOC_BUNDLE)
    assert isinstance(path, str)
    assert REDOC_CDN_LOGO in Path(path).read_text(encoding="utf-8")
