"""The image endpoints end to end, against the fake model server."""

import base64
import io
import json
from http import HTTPStatus

import pytest
from PIL import Image

from tests.images import image_bytes, rotated_jpeg

COMPLETION = "/image_model/chat/completion"
STREAM = "/image_model/chat/stream"


def form(prompt="What objects are in this image?", **fields):
    return {"prompt": prompt, **{k: str(v) for k, v in fields.items()}}


def photo(data=None, name="photo.jpg", content_type="image/jpeg"):
    return ("image", (name, data if data is not None else image_bytes("JPEG"), content_type))


def sent_images(upstream) -> list[Image.Image]:
    content = upstream.last_request.body["messages"][-1]["content"]
    images = []
    for part in content:
        if part["type"] == "image_url":
            header, _, payload = part["image_url"]["url"].partition(",")
            assert header.startswith("data:image/") and header.endswith(";base64")
            images.append(Image.open(io.BytesIO(base64.b64decode(payload))))
    return images


def test_seed_example_returns_the_answer(gateway, upstream):
    upstream.behave(
        content="The image contains a laptop, coffee mug, and notebook on a wooden desk."
    )
    with gateway.client() as client:
        response = client.post(COMPLETION, data=form(temperature=0.3), files=[photo()])
    assert response.status_code == HTTPStatus.OK, response.text
    body = response.json()
    assert body["response"].startswith("The image contains a laptop")
    assert body["model"] == "fake-vlm"
    assert body["finish_reason"] == "stop"
    sent = upstream.last_request.body
    assert sent["model"] == "fake-vlm"
    assert sent["temperature"] == 0.3
    content = sent["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "What objects are in this image?"}
    (image,) = sent_images(upstream)
    image.load()
    assert image.format == "JPEG" and image.size == (64, 48)


def test_several_images_and_a_system_message_are_sent_in_order(gateway, upstream):
    files = [
        photo(image_bytes("PNG", size=(10, 10)), "a.png", "image/png"),
        photo(image_bytes("WEBP", size=(20, 10)), "b.webp", "image/webp"),
        photo(image_bytes("GIF", size=(30, 10)), "c.gif", "image/gif"),
    ]
    with gateway.client() as client:
        response = client.post(COMPLETION, data=form(system="Be brief."), files=files)
    assert response.status_code == HTTPStatus.OK
    messages = upstream.last_request.body["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert [image.size for image in sent_images(upstream)] == [(10, 10), (20, 10), (30, 10)]


def test_phone_photo_is_sent_upright_and_large_image_downscaled(gateway, upstream):
    files = [
        photo(rotated_jpeg((80, 40))),
        photo(image_bytes("PNG", size=(4096, 1024)), "big.png", "image/png"),
    ]
    with gateway.client() as client:
        assert client.post(COMPLETION, data=form(), files=files).status_code == HTTPStatus.OK
    assert [image.size for image in sent_images(upstream)] == [(40, 80), (2048, 512)]


def test_image_stream_plain_and_sse(gateway, upstream):
    with gateway.client() as client:
        plain = client.post(STREAM, data=form(), files=[photo()])
        sse = client.post(
            STREAM, data=form(), files=[photo()], headers={"Accept": "text/event-stream"}
        )
    assert plain.status_code == HTTPStatus.OK
    assert plain.text == "The capital of France is Paris."
    assert upstream.last_request.body["stream"] is True
    events = [e.removeprefix("data: ") for e in sse.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["delta"] for e in events[:-2]) == "The capital of France is Paris."


def test_response_format_as_json_form_field_is_forwarded(gateway, upstream):
    upstream.behave(content='{"objects": ["mug"]}')
    data = form(response_format=json.dumps({"type": "json_object"}))
    with gateway.client() as client:
        response = client.post(COMPLETION, data=data, files=[photo()])
    assert response.status_code == HTTPStatus.OK
    assert upstream.last_request.body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("path", [COMPLETION, STREAM])
def test_auth_is_enforced(gateway, path):
    with gateway.client(key=None) as client:
        assert (
            client.post(path, data=form(), files=[photo()]).status_code == HTTPStatus.UNAUTHORIZED
        )
    with gateway.client(key="nope") as client:
        assert client.post(path, data=form(), files=[photo()]).status_code == HTTPStatus.FORBIDDEN


@pytest.mark.parametrize(
    ("data", "files", "status", "fragment"),
    [
        (form(), [], 400, "image"),
        ({}, [photo()], 400, "prompt"),
        (form(), [photo(b"just some text", "notes.txt", "text/plain")], 400, "notes.txt"),
        (form(), [photo(image_bytes("BMP"), "pic.bmp", "image/bmp")], 415, "BMP"),
        (form(temperature=9), [photo()], 400, "temperature"),
        (form(response_format="{not json"), [photo()], 400, "response_format"),
    ],
)
@pytest.mark.parametrize("path", [COMPLETION, STREAM])
def test_bad_input_gets_a_clear_4xx(gateway, upstream, path, data, files, status, fragment):
    with gateway.client() as client:
        response = client.post(path, data=data, files=files)
    assert response.status_code == status
    assert fragment in response.json()["detail"]
    assert upstream.requests == []


def test_oversized_upload_is_413_before_it_is_buffered(gateways, upstream):
    gateway = gateways.get(
        IMAGE_MODEL__BASE_URL=upstream.url,
        IMAGE_MODEL__MODEL_NAME="small",
        IMAGE_MODEL__MAX_IMAGE_BYTES="100000",
        TEXT_MODEL__BASE_URL=upstream.url,
    )
    with gateway.client() as client:
        response = client.post(COMPLETION, data=form(), files=[photo(b"\xff" * 3_000_000)])
        assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        assert "IMAGE_MODEL__MAX_IMAGE_BYTES" in response.json()["detail"]
        # Just under the body limit but over the per-image limit: still 413, naming the limit.
        response = client.post(COMPLETION, data=form(), files=[photo(b"\xff" * 200_000)])
        assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def test_oversized_chunked_upload_is_cut_off_while_reading(gateways, upstream):
    gateway = gateways.get(
        IMAGE_MODEL__BASE_URL=upstream.url,
        IMAGE_MODEL__MODEL_NAME="small",
        IMAGE_MODEL__MAX_IMAGE_BYTES="100000",
        TEXT_MODEL__BASE_URL=upstream.url,
    )

    def body():  # no Content-Length: the limit must be enforced on the bytes as they come
        for _ in range(200):
            yield b"x" * 65536

    with gateway.client() as client:
        response = client.post(
            COMPLETION, content=body(), headers={"Content-Type": "multipart/form-data; boundary=zz"}
        )
    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def test_no_vision_server_is_503_explaining_what_to_set(gateways, upstream):
    gateway = gateways.get(TEXT_MODEL__BASE_URL=upstream.url, IMAGE_MODEL__BASE_URL="")
    with gateway.client() as client:
        response = client.post(COMPLETION, data=form(), files=[photo()])
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert "IMAGE_MODEL__BASE_URL" in response.json()["detail"]
