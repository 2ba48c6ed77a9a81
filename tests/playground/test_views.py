"""The HTML pages in-process: the playground, its redirects, and the ReDoc bundle served locally."""

from __future__ import annotations

import re
from http import HTTPStatus

import pytest
from django.test import Client

from infra.content_security import OFFLINE_PAGE_CSP
from playground import views


@pytest.fixture
def client():
    return Client()


def test_playground_page_has_its_controls_and_keeps_to_this_server(client):
    response = client.get("/playground")
    assert response.status_code == HTTPStatus.OK
    assert response["Content-Security-Policy"] == OFFLINE_PAGE_CSP
    page = response.content.decode()
    for control in ("api-key", "prompt", "send", "messages", "temperature", "max-tokens"):
        assert f'id="{control}"' in page, control
    # Every script, style sheet and link is on this server: nothing loads from elsewhere.
    addresses = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert addresses, "the page links its script and style sheet"
    assert [a for a in addresses if re.match(r"(https?:)?//", a)] == []


def test_options_gets_the_allowed_methods_not_a_500(client):
    response = client.options("/playground")
    assert response.status_code == HTTPStatus.OK
    assert response["Allow"] == "GET, HEAD, OPTIONS"
    assert response["Content-Security-Policy"] == OFFLINE_PAGE_CSP


def test_home_and_favicon_redirect_to_local_pages(client):
    home = client.get("/")
    assert home.status_code == HTTPStatus.FOUND and home["Location"] == "/playground"
    favicon = client.get("/favicon.ico")
    assert favicon.status_code == HTTPStatus.FOUND
    assert favicon["Location"].startswith("/static/")


def test_redoc_bundle_points_its_logo_at_this_server(client):
    response = client.get("/redoc/redoc.standalone.js")
    assert response.status_code == HTTPStatus.OK
    assert response["Content-Type"] == "text/javascript; charset=utf-8"
    assert response["Cache-Control"] == "public, max-age=3600"
    source = response.content.decode()
    assert views.REDOC_CDN_LOGO not in source
    assert views.REDOC_LOCAL_LOGO in source


def test_redoc_page_is_served_with_the_offline_policy(client):
    response = client.get("/redoc")
    assert response.status_code == HTTPStatus.OK
    assert response["Content-Security-Policy"] == OFFLINE_PAGE_CSP
    assert "redoc/redoc.standalone.js" in response.content.decode()
