"""Hosts: a request for a host the server does not answer to gets a 400 naming the setting."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.test import Client

from tests.settings_probe import settings_value


def test_the_default_is_the_serve_address_and_the_loopback_names():
    assert settings_value("ALLOWED_HOSTS") == ["localhost", "127.0.0.1", "[::1]"]
    assert settings_value("ALLOWED_HOSTS", SERVER__HOST="10.1.2.3") == [
        "localhost",
        "127.0.0.1",
        "[::1]",
        "10.1.2.3",
    ]
    # Binding every interface names no host: only loopback until ALLOWED_HOSTS lists some.
    assert settings_value("ALLOWED_HOSTS", SERVER__HOST="0.0.0.0") == [  # noqa: S104
        "localhost",
        "127.0.0.1",
        "[::1]",
    ]
    assert settings_value("ALLOWED_HOSTS", ALLOWED_HOSTS="api.example.com, .example.org") == [
        "api.example.com",
        ".example.org",
    ]


def test_a_trusted_proxy_header_is_read_as_a_header_and_a_value():
    assert settings_value(
        "SECURE_PROXY_SSL_HEADER", SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto,https"
    ) == ["HTTP_X_FORWARDED_PROTO", "https"]


@pytest.mark.parametrize("path", ["/", "/v1/models", "/admin/login/", "/openapi.json", "/docs"])
def test_another_host_gets_400_naming_the_setting(settings, path):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
    response = Client().get(path, HTTP_HOST="evil.com")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response["Content-Type"] == "application/json"
    detail = response.json()["detail"]
    assert "'evil.com'" in detail
    assert "ALLOWED_HOSTS" in detail


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_probes_answer_for_any_host_as_orchestrators_use_the_pods_address(settings, path):
    settings.ALLOWED_HOSTS = ["api.example.com"]
    response = Client().get(path, HTTP_HOST="10.1.2.3:1999")
    assert response.status_code != HTTPStatus.BAD_REQUEST


def test_an_allowed_host_with_a_port_is_served(settings):
    settings.ALLOWED_HOSTS = ["localhost"]
    assert Client().get("/healthz", HTTP_HOST="localhost:1999").status_code == HTTPStatus.OK


def test_the_schema_examples_use_an_allowed_host_and_no_shared_cache_keeps_them(settings):
    settings.ALLOWED_HOSTS = ["api.example.com"]
    response = Client().get("/openapi.json", HTTP_HOST="api.example.com")
    assert response.status_code == HTTPStatus.OK
    assert "http://api.example.com/v1" in response.content.decode()
    assert "private" in response["Cache-Control"]
    assert "no-cache" in response["Cache-Control"]
    assert "Host" in response["Vary"]


def test_with_any_host_allowed_the_examples_never_take_the_host_header(settings):
    settings.ALLOWED_HOSTS = ["*"]
    response = Client().get("/openapi.json", HTTP_HOST="evil.com")
    assert response.status_code == HTTPStatus.OK
    body = response.content.decode()
    assert "evil.com" not in body
    assert "http://localhost:1999/v1" in body


def test_the_secure_cookie_settings_mark_the_session_and_csrf_cookies(settings):
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    response = Client().get("/api-auth/key")
    assert response.status_code == HTTPStatus.OK
    assert response.cookies[settings.CSRF_COOKIE_NAME]["secure"] is True


def test_serve_answers_to_the_address_it_binds(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from tests.conftest import ROOT
    from tests.fake_upstream import _free_port, wait_for_http

    port = _free_port()
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--host", "127.0.0.2", "--port", str(port)],
            cwd=ROOT,
            env={
                **os.environ,
                "ENV_FILE": "/dev/null",
                "API_KEY": "k",
                "ALLOWED_HOSTS": "",
                "TEXT_MODEL__BASE_URL": "http://127.0.0.1:9/v1",
                "DATABASE__SQLITE_PATH": str(tmp_path / "db.sqlite3"),
                "API_KEYS__PEPPER_FILE": str(tmp_path / "api-key-pepper"),
                "SERVER__PID_FILE": str(tmp_path / "pid"),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"http://127.0.0.2:{port}/healthz", process=process, log=log)
        assert httpx.get(f"http://127.0.0.2:{port}/openapi.json").status_code == HTTPStatus.OK
        other = httpx.get(f"http://127.0.0.2:{port}/openapi.json", headers={"Host": "evil.com"})
        assert other.status_code == HTTPStatus.BAD_REQUEST
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


async def test_a_host_remembered_as_allowed_is_refused_once_the_setting_drops_it(settings):
    from django.http import HttpResponse
    from django.test import RequestFactory

    from server.middleware import AllowedHostsMiddleware

    async def ok(request):
        return HttpResponse("ok")

    middleware = AllowedHostsMiddleware(ok)
    settings.ALLOWED_HOSTS = ["api.example.com"]
    factory = RequestFactory()
    for host in ("api.example.com", "api.example.com", "evil.com"):
        response = await middleware(factory.get("/v1/models", HTTP_HOST=host))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert (await middleware(factory.get("/", HTTP_HOST="api.example.com"))).status_code == 200
    settings.ALLOWED_HOSTS = ["other.example.com"]
    refused = await middleware(factory.get("/", HTTP_HOST="api.example.com"))
    assert refused.status_code == HTTPStatus.BAD_REQUEST
