"""response_format end to end: the seed's product-review schema against the fake model server."""

import json
from http import HTTPStatus

import pytest

from tests.images import image_bytes
from tests.inference.test_structured import OUT_OF_RANGE, REVIEW_FORMAT, VALID

REVIEW = {
    "messages": [{"role": "user", "content": "Analyze this product review"}],
    "response_format": REVIEW_FORMAT,
}


def post(gateway, endpoint: str, body: dict, **kwargs):
    with gateway.client() as client:
        if endpoint == "text":
            return client.post("/text_model/chat/completion", json=body, **kwargs)
        data = {
            "prompt": "Review of the product in this photo",
            "response_format": json.dumps(body["response_format"]),
        }
        files = [("image", ("p.png", image_bytes("PNG"), "image/png"))]
        return client.post("/image_model/chat/completion", data=data, files=files, **kwargs)


@pytest.mark.parametrize("endpoint", ["text", "image"])
def test_valid_answer_comes_back_with_parsed(gateway, upstream, endpoint):
    upstream.behave(content=VALID)
    response = post(gateway, endpoint, REVIEW)
    assert response.status_code == HTTPStatus.OK
    body = response.json()
    assert json.loads(body["response"]) == body["parsed"] == json.loads(VALID)
    assert upstream.last_request.body["response_format"] == REVIEW_FORMAT
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("endpoint", ["text", "image"])
def test_invalid_answer_is_repaired(gateway, upstream, endpoint):
    upstream.behave(contents=[OUT_OF_RANGE, VALID])
    response = post(gateway, endpoint, REVIEW)
    assert response.status_code == HTTPStatus.OK
    assert response.json()["parsed"]["rating"] == 5
    assert len(upstream.requests) == 2


@pytest.mark.parametrize("endpoint", ["text", "image"])
def test_still_invalid_answer_is_an_honest_502(gateway, upstream, endpoint):
    upstream.behave(content=OUT_OF_RANGE)
    response = post(gateway, endpoint, REVIEW)
    assert response.status_code == HTTPStatus.BAD_GATEWAY
    body = response.json()
    assert "did not produce valid" in body["detail"]
    assert body["errors"] == [
        {"path": "$.rating", "message": "100 is greater than the maximum of 5"}
    ]
    assert body["output"] == OUT_OF_RANGE


def test_json_object_mode_rejects_prose(gateway, upstream):
    upstream.behave(content="Here is your JSON: none")
    response = post(gateway, "text", {**REVIEW, "response_format": {"type": "json_object"}})
    assert response.status_code == HTTPStatus.BAD_GATEWAY


def test_invalid_request_schema_is_400(gateway, upstream):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}
    response = post(gateway, "text", {**REVIEW, "response_format": bad})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "not a valid JSON Schema" in response.json()["detail"]
    assert upstream.requests == []


@pytest.mark.parametrize(("content", "valid"), [(VALID, True), (OUT_OF_RANGE, False)])
def test_stream_reports_validity_in_the_last_event(gateway, upstream, content, valid):
    upstream.behave(content=content)
    with gateway.client() as client:
        response = client.post(
            "/text_model/chat/stream", json=REVIEW, headers={"Accept": "text/event-stream"}
        )
    events = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]
    final = json.loads(events[-2])
    assert final["valid"] is valid
    assert bool(final["errors"]) is not valid
    assert "".join(json.loads(e)["delta"] for e in events[:-2]) == content
    assert len(upstream.requests) == 1  # no repair mid-stream


def test_server_without_json_schema_support_gets_the_fallback(gateways, upstream):
    gateway = gateways.get(TEXT_MODEL__BASE_URL=upstream.url, TEXT_MODEL__MODEL_NAME="no-schema")
    upstream.behave(content=VALID, reject_json_schema=True)
    response = post(gateway, "text", REVIEW)
    assert response.status_code == HTTPStatus.OK
    assert response.json()["parsed"]["rating"] == 5
    assert upstream.last_request.body["response_format"] == {"type": "json_object"}
    assert "falling back to json_object" in gateway.log()
