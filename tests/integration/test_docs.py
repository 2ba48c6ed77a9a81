"""The docs pages render from the gateway itself, with no CDN."""

import re
from http import HTTPStatus

import pytest

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
    params = schema["components"]["schemas"]["TextChatRequestRequest"]["properties"]
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
