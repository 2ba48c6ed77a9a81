"""
Uploaded images: checked with Pillow (never trusted from the filename or the client's content
type), made upright, downscaled to save tokens, and encoded as data URLs for the vision model.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from completions.exceptions import InvalidImage, PayloadTooLarge, UnsupportedImage

# Formats every common VLM server accepts. GIFs are sent as their first frame, in PNG.
ACCEPTED_FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "png"}

# Decompression bombs: a small file that decodes to gigapixels. 64 megapixels is far beyond
# what any vision model looks at (they work at 1-2 megapixels) and about 256 MB decoded.
MAX_IMAGE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
EXIF_ORIENTATION = 0x0112


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


def prepare_image(upload, *, max_bytes: int, max_side: int) -> PreparedImage:
    """Validate one uploaded file and return it as a data URL ready for the model."""
    if upload.size > max_bytes:
        raise PayloadTooLarge(
            f"Image {describe_upload(upload)} is larger than the limit of {max_bytes} bytes "
            "(IMAGE_MODEL__MAX_IMAGE_BYTES)."
        )
    upload.seek(0)
    raw = upload.read()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            fmt = image.format or "unknown"
            if fmt not in ACCEPTED_FORMATS:
                raise UnsupportedImage(
                    f"Image {describe_upload(upload)} is {fmt}; send JPEG, PNG, WebP or GIF."
                )
            image.load()  # decodes the (first) frame: catches truncated and corrupt files
    except UnsupportedImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(
            f"Image {describe_upload(upload)} has more than {MAX_IMAGE_PIXELS} pixels."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InvalidImage(f"File {describe_upload(upload)} is not a readable image.") from None

    upright: Image.Image = image
    changed = fmt == "GIF"
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        upright = ImageOps.exif_transpose(image)
        changed = True
    if max_side and max(upright.size) > max_side:
        upright = upright.copy() if upright is image else upright
        upright.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        changed = True

    subtype = ACCEPTED_FORMATS[fmt]
    if changed:
        raw = _encode(upright, subtype)
    encoded = base64.b64encode(raw).decode("ascii")
    return PreparedImage(
        data_url=f"data:image/{subtype};base64,{encoded}",
        media_type=f"image/{subtype}",
        width=upright.width,
        height=upright.height,
    )


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
