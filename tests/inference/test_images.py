import base64
import io
import platform

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from api.exceptions import status_of
from inference import images
from inference.exceptions import InvalidImage, PayloadTooLarge, UnsupportedImage
from inference.images import (
    max_image_pixels,
    parse_data_url,
    prepare_image,
    prepare_message_images,
    prepare_uploads,
    release_freed_memory,
)
from tests.images import image_bytes, rotated_jpeg


def upload(data: bytes, name="photo.jpg", content_type="image/jpeg"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def decoded(prepared) -> Image.Image:
    header, _, payload = prepared.data_url.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/png")],
)
def test_accepted_formats_become_data_urls(fmt, media_type):
    prepared = prepare_image(upload(image_bytes(fmt)), max_bytes=10**7, max_side=2048)
    assert prepared.media_type == media_type
    image = decoded(prepared)
    assert image.size == (64, 48)


def test_format_comes_from_content_not_filename():
    prepared = prepare_image(
        upload(image_bytes("PNG"), name="lies.jpg", content_type="image/jpeg"),
        max_bytes=10**7,
        max_side=0,
    )
    assert prepared.media_type == "image/png"


def test_unsupported_image_type_is_415_naming_it():
    with pytest.raises(UnsupportedImage) as caught:
        prepare_image(upload(image_bytes("BMP"), name="x.bmp"), max_bytes=10**7, max_side=0)
    assert status_of(caught.value) == 415
    assert "BMP" in str(caught.value.detail) and "x.bmp" in str(caught.value.detail)


@pytest.mark.parametrize("data", [b"hello, I am text", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_not_an_image_is_400_naming_the_upload(data):
    with pytest.raises(InvalidImage) as caught:
        prepare_image(
            upload(data, name="notes.txt", content_type="text/plain"), max_bytes=10**7, max_side=0
        )
    assert status_of(caught.value) == 400
    assert "notes.txt" in str(caught.value.detail)


def test_truncated_image_is_400():
    data = image_bytes("JPEG", size=(300, 300))
    with pytest.raises(InvalidImage):
        prepare_image(upload(data[: len(data) // 2]), max_bytes=10**7, max_side=0)


def test_oversized_file_is_413_with_the_limit():
    with pytest.raises(PayloadTooLarge) as caught:
        prepare_image(upload(image_bytes("PNG")), max_bytes=10, max_side=0)
    assert "10 bytes" in str(caught.value.detail)


def test_decompression_bomb_is_refused():
    # A tiny PNG whose header claims more pixels than allowed.
    side = int(max_image_pixels() ** 0.5) + 100
    bomb = image_bytes("PNG", size=(side, side), color=(0, 0, 0), optimize=True)
    assert len(bomb) < 2_000_000
    with pytest.raises(PayloadTooLarge, match="pixels"):
        prepare_image(upload(bomb), max_bytes=10**8, max_side=0)


def test_exif_orientation_is_applied():
    prepared = prepare_image(upload(rotated_jpeg((80, 40))), max_bytes=10**7, max_side=0)
    assert decoded(prepared).size == (40, 80)


def test_large_image_is_downscaled_keeping_aspect_ratio():
    prepared = prepare_image(
        upload(image_bytes("PNG", size=(1000, 500))), max_bytes=10**8, max_side=200
    )
    assert decoded(prepared).size == (200, 100)
    assert (prepared.width, prepared.height) == (200, 100)


def test_downscale_can_be_turned_off():
    prepared = prepare_image(
        upload(image_bytes("PNG", size=(1000, 500))), max_bytes=10**8, max_side=0
    )
    assert decoded(prepared).size == (1000, 500)


def test_untouched_image_is_passed_through_byte_for_byte():
    data = image_bytes("JPEG")
    prepared = prepare_image(upload(data), max_bytes=10**7, max_side=2048)
    assert base64.b64decode(prepared.data_url.partition(",")[2]) == data


# --- Bounds ---------------------------------------------------------------------------------------


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    # The header says 5000x5000; the pixel data is cut off. A decode would fail with
    # InvalidImage, so a 413 proves the header alone was read.
    data = image_bytes("PNG", size=(5000, 5000), color=(0, 0, 0))[:2000]
    with pytest.raises(PayloadTooLarge, match="5000x5000.*IMAGE_MODEL__MAX_IMAGE_PIXELS"):
        prepare_image(upload(data, name="big.png"), max_bytes=10**8, max_side=0, max_pixels=10**6)


def test_image_at_the_pixel_limit_is_accepted():
    prepared = prepare_image(
        upload(image_bytes("PNG", size=(1000, 1000))), max_bytes=10**8, max_side=0, max_pixels=10**6
    )
    assert (prepared.width, prepared.height) == (1000, 1000)


def test_large_jpeg_is_decoded_at_a_reduced_scale_then_downscaled():
    data = image_bytes("JPEG", size=(4000, 2000))
    prepared = prepare_image(upload(data), max_bytes=10**8, max_side=500)
    assert decoded(prepared).size == (500, 250)
    assert prepared.media_type == "image/jpeg"


def test_rotated_large_jpeg_is_upright_after_the_reduced_decode():
    image = Image.new("RGB", (3000, 1000), (0, 128, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    prepared = prepare_image(upload(buffer.getvalue()), max_bytes=10**8, max_side=300)
    assert decoded(prepared).size == (100, 300)


def test_release_freed_memory_trims_the_heap_where_glibc_allows(monkeypatch):
    if platform.libc_ver()[0] == "glibc":
        assert images._malloc_trim is not None  # found, so bursts of large images give back
    calls = []
    monkeypatch.setattr(images, "_malloc_trim", calls.append)
    release_freed_memory()
    assert calls == [0]  # everything above the heap's top, none kept as padding
    monkeypatch.setattr(images, "_malloc_trim", None)  # musl, macOS: nothing to call
    release_freed_memory()


async def test_uploads_are_prepared_in_order_off_the_event_loop():
    uploads = [upload(image_bytes("PNG", size=(10 + i, 10))) for i in range(5)]
    prepared = await prepare_uploads(uploads, max_bytes=10**7, max_side=0)
    assert [p.width for p in prepared] == [10, 11, 12, 13, 14]


# --- data: URLs -----------------------------------------------------------------------------------


def as_data_url(data: bytes, media_type="image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a.png",
        "data:image/png,notbase64",
        "data:text/plain;base64,aGk=",
        "data:image/png;base64",
        "data:;base64,aGk=",
    ],
)
def test_parse_data_url_refuses_anything_but_a_base64_image(url):
    with pytest.raises(ValueError, match="base64 data URL"):
        parse_data_url(url, max_bytes=10**6)


def test_parse_data_url_checks_the_size_without_decoding():
    with pytest.raises(ValueError, match="more than 300 bytes"):
        parse_data_url("data:image/png;base64," + "A" * 800, max_bytes=300)
    parsed = parse_data_url("DATA:image/PNG;base64,aGk=", max_bytes=300)
    assert parsed.media_type == "image/png" and parsed.payload == "aGk="


def message_with(url: str) -> list[dict]:
    part = {"type": "image_url", "image_url": {"url": url, "detail": "low"}}
    return [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]


async def test_message_images_get_the_upload_checks():
    messages = message_with(as_data_url(image_bytes("PNG", size=(1000, 500))))
    prepared = await prepare_message_images(messages, max_bytes=10**7, max_side=200)
    part = prepared[0]["content"][1]
    assert part["image_url"]["detail"] == "low"
    image = Image.open(io.BytesIO(base64.b64decode(part["image_url"]["url"].partition(",")[2])))
    assert image.size == (200, 100)
    assert prepared[0]["content"][0] == {"type": "text", "text": "hi"}
    assert messages[0]["content"][1]["image_url"]["url"].startswith("data:image/png")  # untouched


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("data:image/png;base64,!!!!", InvalidImage),
        (as_data_url(b"hello, I am text"), InvalidImage),
        (as_data_url(image_bytes("BMP")), UnsupportedImage),
    ],
)
async def test_message_images_that_are_not_usable_are_refused(url, error):
    with pytest.raises(error) as caught:
        await prepare_message_images(message_with(url), max_bytes=10**7, max_side=0)
    assert "messages[0].content[1].image_url" in str(caught.value.detail)
