"""
Every route that can reach a model goes through the accounted path: walked from the URLconf.

A route is known to reach a model (`MODEL_ROUTES`, each with a request that does) or known not
to (`NO_MODEL_ROUTES`); a new route in neither list fails `test_every_route_is_classified`, so
whoever adds one says which it is. Each model route is then called, against a real gateway
and a real fake model server, with a database key allowed one request a minute: the first call
is answered and leaves a ledger row, the second is refused with 429 before it reaches the
model server.
"""

from __future__ import annotations

import importlib
import importlib.util
import sqlite3
from dataclasses import dataclass, field
from http import HTTPStatus

import httpx
import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from tests.images import image_bytes
from tests.integration.test_teams_gateway import ledger_rows, manage, prefix_of, wait_for

QUESTION = [{"role": "user", "content": "hello"}]


@dataclass(frozen=True)
class Call:
    path: str
    json: dict | None = None
    form: dict = field(default_factory=dict)
    image: bool = False
    stream: bool = False


MODEL_ROUTES: dict[str, Call] = {
    "text-completion": Call("/text_model/chat/completion", {"messages": QUESTION}),
    "text-stream": Call("/text_model/chat/stream", {"messages": QUESTION}, stream=True),
    "image-completion": Call("/image_model/chat/completion", form={"prompt": "hi"}, image=True),
    "image-stream": Call(
        "/image_model/chat/stream", form={"prompt": "hi"}, image=True, stream=True
    ),
    "openai-chat": Call("/v1/chat/completions", {"model": "chat", "messages": QUESTION}),
    "openai-completions": Call("/v1/completions", {"model": "chat", "prompt": "hello"}),
    "openai-embeddings": Call("/v1/embeddings", {"model": "embed", "input": "hello"}),
    "responses": Call("/v1/responses", {"model": "chat", "input": "hello"}),
    "anthropic-messages": Call(
        "/v1/messages", {"model": "chat", "max_tokens": 5, "messages": QUESTION, "stream": True}
    ),
    # The server's tokenizer: counted like embeddings, by the input.
    "anthropic-count-tokens": Call(
        "/v1/messages/count_tokens", {"model": "chat", "messages": QUESTION}
    ),
}

# Routes that never call a model server.
NO_MODEL_ROUTES = {
    "openai-models",
    "openai-model",
    "openai-404",
    "response",  # a stored response, read or deleted
    "response-input-items",
    "me",
    "healthz",
    "readyz",
    "metrics",
    "login",
    "logout",
    "home",
    "favicon",
    "playground",
    "schema",
    "swagger-ui",
    "redoc-bundle",
    "redoc",
    # The self-service portal and single sign-on: teams, keys and usage, no model call.
    "portal-home",
    "portal-login",
    "portal-logout",
    "portal-my-usage",
    "portal-create-key",
    "portal-revoke-key",
    "portal-rotate-key",
    "portal-key-limits",
    "portal-team",
    "portal-team-limits",
    "portal-add-member",
    "portal-team-usage",
    "portal-member-role",
    "portal-remove-member",
    "oidc_authentication_init",
    "oidc_authentication_callback",
    # Batches store files and lines; their lines reach models later, from the batch runner,
    # through gateway.calls under the batch's key (tests/batches/test_runner.py).
    "openai-files",
    "openai-file",
    "openai-file-content",
    "openai-batches",
    "openai-batch",
    "openai-batch-cancel",
}


def _routes(patterns, prefix: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def _api_routes():
    """Every route outside the Django admin, with its name and view."""
    return [
        (path, pattern)
        for path, pattern in _routes(get_resolver().url_patterns)
        if not path.startswith("admin/")
    ]


def test_every_route_is_classified():
    unknown = [
        f"{path} ({pattern.name})"
        for path, pattern in _api_routes()
        if pattern.name not in MODEL_ROUTES and pattern.name not in NO_MODEL_ROUTES
    ]
    assert unknown == [], (
        "A new route: add it to MODEL_ROUTES (with a request that reaches a model) or to "
        f"NO_MODEL_ROUTES: {unknown}"
    )


def test_model_routes_use_the_accounted_path():
    """
    The views of model routes call `gateway.calls` (and the import-linter contracts of
    `scripts/test` forbid the API apps to import the core's model calls at all).
    """
    for path, pattern in _api_routes():
        if pattern.name in MODEL_ROUTES:
            view = getattr(pattern.callback, "view_class", pattern.callback)
            module = vars(importlib.import_module(view.__module__))
            # Or its app's services, when the view hands the request to them.
            services = view.__module__.rsplit(".", 1)[0] + ".services"
            if module.get("calls") is None and importlib.util.find_spec(services) is not None:
                module = vars(importlib.import_module(services))
            assert module.get("calls") is not None, f"{path}: its view does not use gateway.calls"


def test_the_classification_lists_only_existing_routes():
    names = {pattern.name for _, pattern in _api_routes()}
    assert set(MODEL_ROUTES) <= names
    assert NO_MODEL_ROUTES <= names


@pytest.fixture(scope="module")
def routes_gateway(gateways, fake_upstream_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("routes")
    catalog = folder / "models.yaml"
    url = fake_upstream_server.url
    catalog.write_text(
        f"""\
default_text_model: chat
default_image_model: vision
models:
  chat:
    servers: [{url}]
    capabilities: [chat, tools]
    max_retries: 0
  vision:
    servers: [{url}]
    capabilities: [chat, vision]
    max_retries: 0
  embed:
    servers: [{url}]
    capabilities: [embeddings]
    max_retries: 0
"""
    )
    database = folder / "gateway.sqlite3"
    gateway = gateways.get(
        LLMAPI_MODELS_FILE=str(catalog),
        TEXT_MODEL__BASE_URL="",
        DATABASE__SQLITE_PATH=str(database),
        USAGE__FLUSH_INTERVAL="0.2",
    )
    return gateway, database


def _send(url: str, key: str, call: Call) -> int:
    files = {"image": ("a.png", image_bytes(), "image/png")} if call.image else None
    with httpx.Client(base_url=url, timeout=30) as client:
        with client.stream(
            "POST",
            call.path,
            headers={"X-API-Key": key},
            json=call.json,
            data=call.form or None,
            files=files,
        ) as response:
            response.read()
            return response.status_code


@pytest.mark.parametrize("name", sorted(MODEL_ROUTES))
def test_each_model_route_is_limited_and_recorded(name, routes_gateway, fake_upstream_server):
    gateway, database = routes_gateway
    call = MODEL_ROUTES[name]
    key = manage(
        database,
        "create_api_key",
        "--team",
        "routes",
        "--name",
        name,
        "--requests-per-minute",
        "1",
    )
    fake_upstream_server.reset()
    assert _send(gateway.url, key, call) == HTTPStatus.OK
    reached = len(fake_upstream_server.requests)
    assert reached >= 1
    assert _send(gateway.url, key, call) == HTTPStatus.TOO_MANY_REQUESTS
    assert len(fake_upstream_server.requests) == reached  # the refusal never reached the model
    rows = wait_for(lambda: len(ledger_rows(database, prefix_of(key))) == 2 or None)
    assert rows, ledger_rows(database, prefix_of(key))
    statuses = [row[1] for row in ledger_rows(database, prefix_of(key))]
    assert statuses == [200, 429]
    with sqlite3.connect(database) as db:
        [(tokens,)] = db.execute(
            "SELECT prompt_tokens + completion_tokens FROM usage_usagerecord "
            "WHERE key_prefix = ? AND status = 200",
            (prefix_of(key),),
        ).fetchall()
    assert tokens > 0  # counted, embeddings by their input
