import orjson

from server.body_limit import BodySizeLimitMiddleware


async def run(path: str) -> dict:
    async def app(scope, receive, send):  # never reached: the declared length is too large
        raise AssertionError

    sent = []

    async def send(message):
        sent.append(message)

    middleware = BodySizeLimitMiddleware(app, limit_for_path=lambda path: (10, "LIMIT"))
    scope = {"type": "http", "path": path, "headers": [(b"content-length", b"100")]}
    await middleware(scope, None, send)
    assert sent[0]["status"] == 413
    return orjson.loads(sent[1]["body"])


async def test_413_has_openai_shape_on_v1():
    assert (await run("/v1/chat/completions"))["error"]["code"] == "request_too_large"


async def test_413_keeps_detail_shape_elsewhere():
    assert "LIMIT" in (await run("/text_model/chat/completion"))["detail"]
