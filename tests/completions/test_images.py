import base64
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from completions.exceptions import InvalidImage, PayloadTooLarge, UnsupportedImage
from completions.images import MAX_IMAGE_PIXELS, prepare_image
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
    assert caught.value.status_code == 415
    assert "BMP" in str(caught.value.detail) and "x.bmp" in str(caught.value.detail)


@pytest.mark.parametrize("data", [b"hello, I am text", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_not_an_image_is_400_naming_the_upload(data):
    with pytest.raises(InvalidImage) as caught:
        prepare_image(
            upload(data, name="notes.txt", content_type="text/plain"), max_bytes=10**7, max_side=0
        )
    assert caught.value.status_code == 400
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
    side = int(MAX_IMAGE_PIXELS**0.5) + 100
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
