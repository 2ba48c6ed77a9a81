import base64
import json
from http import HTTPStatus

import httpx
import pytest

from api.exceptions import status_of
from inference.backends.openai_http import (
    OpenAICompatibleBackend,
    chat_completions_url,
    public_location,
    split_credentials,
)
from inference.catalog import CatalogError
from inference.catalog.loader import load_catalog
from inference.exceptions import (
    ContextLengthExceeded,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.models import text_spec

COMPLETION = {
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def backend_with(handler, **spec_changes) -> OpenAICompatibleBackend:
    spec = text_spec(**spec_changes)
    return OpenAICompatibleBackend(spec, transport=httpx.MockTransport(handler))


def sse_body(*chunks: dict, done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://h:8000", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1", "http://h:8000/v1/chat/completions"),
        ("https://api.example.com/v1/", "https://api.example.com/v1/chat/completions"),
    ],
)
def test_base_url_with_or_without_v1(base, url):
    assert chat_completions_url(base) == url


def test_public_location_hides_credentials_and_path():
    assert public_location("http://user:pw@h:8000/v1?key=x") == "http://h:8000"


async def test_create_posts_payload_with_bearer_token():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["auth"] = request.headers.get("Authorization")
        seen["body"] = json.loads(request.content)
        return httpx.Response(200, json=COMPLETION)

    backend = backend_with(handler, api_key="sk-upstream")
    data = await backend.create({"model": "m", "messages": [], "temperature": 0.3})
    assert data["choices"][0]["message"]["content"] == "Hi"
    assert seen["url"] == "http://model:8000/v1/chat/completions"
    assert seen["auth"] == "Bearer sk-upstream"
    assert seen["body"]["temperature"] == 0.3


@pytest.mark.parametrize(
    ("path", "from_root", "url"),
    [
        ("/embeddings", False, "http://model:8000/v1/embeddings"),
        ("/tokenize", True, "http://model:8000/tokenize"),
        ("/chat/completions", True, "http://model:8000/chat/completions"),
    ],
)
async def test_post_to_other_endpoints_beside_or_under_v1(path, from_root, url):
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["auth"] = request.headers.get("Authorization")
        return httpx.Response(200, json={"count": 3})

    backend = backend_with(handler, api_key="sk-upstream")
    assert await backend.post(path, {"model": "m"}, from_root=from_root) == {"count": 3}
    assert seen == {"url": url, "auth": "Bearer sk-upstream"}


async def test_no_authorization_header_without_api_key():
    def handler(request):
        assert "Authorization" not in request.headers
        return httpx.Response(200, json=COMPLETION)

    await backend_with(handler, api_key="").create({})


@pytest.mark.parametrize(
    ("status", "client_status"),
    [(500, HTTPStatus.BAD_GATEWAY), (400, HTTPStatus.BAD_REQUEST), (404, HTTPStatus.NOT_FOUND)],
)
async def test_error_status_carries_upstream_message(status, client_status):
    backend = backend_with(
        lambda r: httpx.Response(status, json={"error": {"message": "model exploded"}})
    )
    with pytest.raises(UpstreamStatusError) as caught:
        await backend.create({})
    assert status_of(caught.value) == client_status
    assert "model exploded" in str(caught.value.detail)


CONTEXT_LENGTH_ANSWERS = [
    # OpenAI
    {
        "error": {
            "message": "This model's maximum context length is 8192 tokens.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        }
    },
    # vLLM
    {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. However, "
        "you requested 5000 tokens.",
        "type": "BadRequestError",
        "code": 400,
    },
    # llama.cpp's server
    {
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
        }
    },
]


@pytest.mark.parametrize("answer", CONTEXT_LENGTH_ANSWERS)
async def test_upstream_context_length_400_becomes_context_length_exceeded(answer):
    backend = backend_with(lambda r: httpx.Response(400, json=answer))
    with pytest.raises(ContextLengthExceeded) as caught:
        await backend.create({})
    assert status_of(caught.value) == HTTPStatus.BAD_REQUEST
    assert caught.value.extra == {"code": "context_length_exceeded"}


async def test_upstream_context_length_400_is_refused_before_a_stream_opens():
    backend = backend_with(lambda r: httpx.Response(400, json=CONTEXT_LENGTH_ANSWERS[0]))
    with pytest.raises(ContextLengthExceeded):
        async with backend.stream({}):
            pass


async def test_other_400_stays_an_upstream_status_error():
    backend = backend_with(lambda r: httpx.Response(400, json={"error": {"message": "bad top_k"}}))
    with pytest.raises(UpstreamStatusError):
        await backend.create({})


async def test_429_keeps_retry_after():
    backend = backend_with(
        lambda r: httpx.Response(429, headers={"Retry-After": "9"}, text="slow down")
    )
    with pytest.raises(UpstreamStatusError) as caught:
        await backend.create({})
    assert status_of(caught.value) == HTTPStatus.TOO_MANY_REQUESTS
    assert caught.value.retry_after == 9


async def test_rejected_credentials_name_the_variable_not_the_token():
    backend = backend_with(lambda r: httpx.Response(401, text="bad token"), api_key="sk-secret")
    with pytest.raises(UpstreamStatusError) as caught:
        await backend.create({})
    assert status_of(caught.value) == HTTPStatus.BAD_GATEWAY
    assert "TEXT_MODEL__API_KEY" in str(caught.value.detail)
    assert "sk-secret" not in str(caught.value.detail)


async def test_timeout_becomes_upstream_timeout():
    def handler(request):
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(UpstreamTimeout):
        await backend_with(handler).create({})


async def test_connect_error_becomes_unavailable():
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UpstreamUnavailable) as caught:
        await backend_with(handler).create({})
    assert "http://model:8000" in str(caught.value.detail)


@pytest.mark.parametrize("body", [b"not json", b'{"no": "choices"}', b'{"choices": []}'])
async def test_non_openai_answer_is_a_protocol_error(body):
    with pytest.raises(UpstreamProtocolError):
        await backend_with(lambda r: httpx.Response(200, content=body)).create({})


async def test_stream_yields_chunks_until_done():
    chunks = [
        {"choices": [{"delta": {"content": "Hel"}, "finish_reason": None}]},
        {"choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}]},
    ]
    backend = backend_with(
        lambda r: httpx.Response(
            200, content=sse_body(*chunks), headers={"content-type": "text/event-stream"}
        )
    )
    async with backend.stream({"stream": True}) as events:
        received = [chunk async for chunk in events]
    assert received == chunks


async def test_stream_checks_status_before_yielding():
    backend = backend_with(lambda r: httpx.Response(503, json={"error": "overloaded"}))
    with pytest.raises(UpstreamStatusError) as caught:
        async with backend.stream({}):
            pytest.fail("must not open a failed stream")
    assert "overloaded" in str(caught.value.detail)


async def test_stream_cut_before_finish_is_an_error():
    chunk = {"choices": [{"delta": {"content": "Hel"}, "finish_reason": None}]}
    backend = backend_with(
        lambda r: httpx.Response(
            200, content=sse_body(chunk, done=False), headers={"content-type": "text/event-stream"}
        )
    )
    with pytest.raises(UpstreamUnavailable):
        async with backend.stream({}) as events:
            async for _ in events:
                pass


async def test_stream_that_is_not_sse_is_a_protocol_error():
    backend = backend_with(lambda r: httpx.Response(200, json=COMPLETION))
    with pytest.raises(UpstreamProtocolError):
        async with backend.stream({}) as events:
            async for _ in events:
                pass


# --- Credentials in BASE_URL -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "clean", "credentials"),
    [
        ("http://h:8000/v1", "http://h:8000/v1", None),
        ("http://alice:pw@h:8000/v1", "http://h:8000/v1", b"alice:pw"),
        ("https://alice:p%40ss%3Aw@h/v1", "https://h/v1", b"alice:p@ss:w"),
        ("http://token@h:8000", "http://h:8000", b"token:"),
    ],
)
def test_split_credentials_moves_them_into_a_basic_header(base, clean, credentials):
    url, authorization = split_credentials(base)
    assert url == clean
    if credentials is None:
        assert authorization is None
    else:
        assert authorization == "Basic " + base64.b64encode(credentials).decode()


async def test_credentials_in_base_url_are_sent_as_basic_auth_not_in_the_url():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["auth"] = request.headers.get("Authorization")
        return httpx.Response(200, json=COMPLETION)

    spec = text_spec(servers=("http://bob:hunter2@model:8000",), api_key="")
    backend = OpenAICompatibleBackend(spec, transport=httpx.MockTransport(handler))
    await backend.create({"model": "m", "messages": []})
    assert seen["url"] == "http://model:8000/v1/chat/completions"
    assert seen["auth"] == "Basic " + base64.b64encode(b"bob:hunter2").decode()


def test_credentials_beside_an_api_key_are_refused(settings):
    settings.LLMAPI_MODELS = {
        **settings.LLMAPI_MODELS,
        "image": {
            **settings.LLMAPI_MODELS["image"],
            "base_url": "http://bob:hunter2@vlm:8000",
            "api_key": "sk-x",
        },
    }
    with pytest.raises(CatalogError, match="IMAGE_MODEL__BASE_URL") as caught:
        load_catalog()
    assert "hunter2" not in str(caught.value)
