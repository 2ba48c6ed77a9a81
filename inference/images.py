"""
Images for the vision model: checked with Pillow (never trusted from the filename, the client's
content type or a data URL's media type), made upright, downscaled to save tokens, and encoded
as data URLs.

Uploads (multipart) and `data:` URLs in /v1 messages go through the same checks. Decoding is
the expensive part, and the part a hostile client aims at, so it is bounded three ways:

* the pixel count is read from the header and checked before anything is decoded
  (`IMAGE_MODEL__MAX_IMAGE_PIXELS`);
* at most `IMAGE_MODEL__MAX_DECODES` images are decoded at once per worker, each in a worker
  thread, never on the event loop; the others wait their turn;
* JPEGs are decoded at a reduced scale when they are to be downscaled anyway, and the memory of
  a large decode is handed back to the system afterwards (glibc keeps freed memory otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ctypes
import ctypes.util
import io
import warnings
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

from inference.exceptions import InvalidImage, PayloadTooLarge, UnsupportedImage
from infra.runtime import get_runtime

# Formats every common VLM server accepts. GIFs are sent as their first frame, in PNG.
ACCEPTED_FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "png"}

# Decompression bombs: a small file that decodes to gigapixels. Vision models work at 1-2
# megapixels, so the default (64 megapixels, 256 MB decoded as RGBA) refuses nothing real.
# Pillow's own guard fires inside Image.open, with a message that cannot name the size or the
# setting; the check below runs at the same point (after the header, before any decoding).
Image.MAX_IMAGE_PIXELS = None
EXIF_ORIENTATION = 0x0112
# Decodes larger than this hand their memory back to the system when they are done.
TRIM_AFTER_PIXELS = 4_000_000


@dataclass(frozen=True)
class PreparedImage:
    data_url: str
    media_type: str
    width: int
    height: int


def describe_upload(upload) -> str:
    name = getattr(upload, "name", None) or "upload"
    content_type = getattr(upload, "content_type", None) or "no content type"
    return f"'{name}' ({content_type}, {upload.size} bytes)"


def max_image_pixels() -> int:
    return settings.LLMAPI_MODELS["image"]["max_image_pixels"]


def prepare_image(
    upload, *, max_bytes: int, max_side: int, max_pixels: int | None = None
) -> PreparedImage:
    """Validate one uploaded file and return it as a data URL ready for the model (blocking)."""
    label = f"Image {describe_upload(upload)}"
    if upload.size > max_bytes:
        raise PayloadTooLarge(
            f"{label} is larger than the limit of {max_bytes} bytes (IMAGE_MODEL__MAX_IMAGE_BYTES)."
        )
    upload.seek(0)
    return prepare_image_bytes(upload.read(), label=label, max_side=max_side, max_pixels=max_pixels)


def prepare_image_bytes(
    raw: bytes, *, label: str, max_side: int, max_pixels: int | None = None
) -> PreparedImage:
    """
    The checks and conversions of `prepare_image`, for bytes already read (blocking). At most
    `max_pixels`, by default IMAGE_MODEL__MAX_IMAGE_PIXELS.
    """
    if max_pixels is None:
        max_pixels = max_image_pixels()
    pixels = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # if re-enabled
            image: Image.Image = Image.open(io.BytesIO(raw))  # reads the header only
            fmt = image.format or "unknown"
            if fmt not in ACCEPTED_FORMATS:
                raise UnsupportedImage(f"{label} is {fmt}; send JPEG, PNG, WebP or GIF.")
            width, height = image.size
            pixels = width * height
            if pixels > max_pixels:
                raise PayloadTooLarge(
                    f"{label} is {width}x{height}, more than {max_pixels} pixels "
                    "(IMAGE_MODEL__MAX_IMAGE_PIXELS)."
                )
            drafted = False
            if fmt == "JPEG" and max_side and max(image.size) > max_side:
                # Let the JPEG decoder scale by 1/2, 1/4 or 1/8 while it decodes: a fraction of
                # the memory and time, and still no smaller than the downscale target.
                drafted = image.draft(None, (max_side, max_side)) is not None
            image.load()  # decodes the (first) frame: catches truncated and corrupt files
            image, changed = _upright_and_downscaled(image, fmt=fmt, max_side=max_side)
            subtype = ACCEPTED_FORMATS[fmt]
            if changed or drafted:
                raw = _encode(image, subtype)
            width, height = image.size
    except (UnsupportedImage, PayloadTooLarge):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(f"{label} has more than {max_pixels} pixels.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise InvalidImage(
            f"{label.replace('Image', 'File', 1)} is not a readable image."
        ) from None
    finally:
        if pixels > TRIM_AFTER_PIXELS:
            image = None  # type: ignore[assignment]
            release_freed_memory()
    encoded = base64.b64encode(raw).decode("ascii")
    return PreparedImage(
        data_url=f"data:image/{subtype};base64,{encoded}",
        media_type=f"image/{subtype}",
        width=width,
        height=height,
    )


def _upright_and_downscaled(
    image: Image.Image, *, fmt: str, max_side: int
) -> tuple[Image.Image, bool]:
    """Downscale first, then turn upright: the rotation then copies the small image, not the big one."""
    changed = fmt == "GIF"
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if max_side and max(image.size) > max_side:
        image = _downscaled(image, max_side)
        changed = True
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
        changed = True
    return image, changed


def _downscaled(image: Image.Image, max_side: int) -> Image.Image:
    width, height = image.size
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if image.mode in ("RGBA", "LA") and width * height > TRIM_AFTER_PIXELS:
        # Pillow resizes an image with alpha through a premultiplied full-size copy: twice the
        # decoded size (512 MB at 64 megapixels). One channel at a time costs a quarter of it.
        # Colours at transparent edges may bleed a little, which a vision model does not mind.
        channels = [
            image.getchannel(band).resize(size, Image.Resampling.LANCZOS)
            for band in image.getbands()
        ]
        return Image.merge(image.mode, channels)
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _encode(image: Image.Image, subtype: str) -> bytes:
    buffer = io.BytesIO()
    if subtype == "jpeg":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(buffer, format="JPEG", quality=90)
    elif subtype == "webp":
        image.save(buffer, format="WEBP", quality=90)
    else:
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            image = image.convert("RGBA")
        image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


# --- Memory -----------------------------------------------------------------------------------


def _load_malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc.malloc_trim if libc is not None else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_malloc_trim = _load_malloc_trim()


def release_freed_memory() -> None:
    """
    Give freed heap memory back to the system. Pillow allocates a large image in 16 MB blocks,
    which glibc serves from its arenas once its mmap threshold has grown; without a trim a burst
    of large images leaves hundreds of MB held by the process.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


# --- Bounded decoding on the event loop --------------------------------------------------------


class DecodeState:
    """The runtime's decoding slots, one set per event loop, sized from the settings."""

    SETTINGS = ("LLMAPI_MODELS",)

    def __init__(self) -> None:
        self.size = max(1, settings.LLMAPI_MODELS["image"]["max_decodes"])
        self.slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )


def _decode_slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    state = get_runtime().part(DecodeState)
    slot = state.slots.get(loop)
    if slot is None:
        slot = state.slots[loop] = asyncio.Semaphore(state.size)
    return slot


async def prepare_uploads(
    uploads: Iterable[Any], *, max_bytes: int, max_side: int
) -> list[PreparedImage]:
    """Prepare uploaded files in order, a few decodes at a time, off the event loop."""
    prepared = []
    for upload in uploads:
        async with _decode_slot():
            prepared.append(
                await asyncio.to_thread(
                    prepare_image, upload, max_bytes=max_bytes, max_side=max_side
                )
            )
    return prepared


# --- data: URLs (/v1 image_url parts) ------------------------------------------------------------

DATA_URL_PREFIX = "data:"


@dataclass(frozen=True)
class DataUrl:
    media_type: str
    payload: str  # base64, not decoded yet


def parse_data_url(url: str, *, max_bytes: int) -> DataUrl:
    """
    Split `data:image/...;base64,<payload>` and check its size without decoding it (cheap: runs
    in the serializer). Raises ValueError with a message for the client.
    """
    header, comma, payload = url[len(DATA_URL_PREFIX) :].partition(",")
    params = header.split(";")
    if (
        not url[: len(DATA_URL_PREFIX)].lower() == DATA_URL_PREFIX
        or not comma
        or params[-1].lower() != "base64"
        or not params[0].lower().startswith("image/")
    ):
        raise ValueError("must be a base64 data URL such as data:image/png;base64,...")
    if len(payload) // 4 * 3 > max_bytes:
        raise ValueError(
            f"holds more than {max_bytes} bytes of image (IMAGE_MODEL__MAX_IMAGE_BYTES)"
        )
    return DataUrl(media_type=params[0].lower(), payload=payload)


def _prepare_data_url(
    data_url: DataUrl, *, label: str, max_bytes: int, max_side: int
) -> PreparedImage:
    try:
        raw = base64.b64decode(data_url.payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{label} is not valid base64.") from None
    if len(raw) > max_bytes:
        raise PayloadTooLarge(
            f"{label} is larger than the limit of {max_bytes} bytes (IMAGE_MODEL__MAX_IMAGE_BYTES)."
        )
    return prepare_image_bytes(raw, label=label, max_side=max_side)


async def prepare_message_images(
    messages: list[dict[str, Any]], *, max_bytes: int, max_side: int
) -> list[dict[str, Any]]:
    """
    The messages with every `image_url` data URL checked and re-encoded like an upload. The
    serializer has refused every other kind of URL already.
    """
    result = []
    for index, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for number, part in enumerate(content):
                if part.get("type") == "image_url":
                    label = f"messages[{index}].content[{number}].image_url"
                    data_url = parse_data_url(part["image_url"]["url"], max_bytes=max_bytes)
                    async with _decode_slot():
                        prepared = await asyncio.to_thread(
                            _prepare_data_url,
                            data_url,
                            label=label,
                            max_bytes=max_bytes,
                            max_side=max_side,
                        )
                    image_url = {**part["image_url"], "url": prepared.data_url}
                    part = {**part, "image_url": image_url}
                parts.append(part)
            message = {**message, "content": parts}
        result.append(message)
    return result
