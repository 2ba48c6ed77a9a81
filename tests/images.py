"""Small images made on the fly for tests."""

import io

from PIL import Image


def image_bytes(fmt: str = "PNG", size=(64, 48), color=(200, 30, 30), **save_kwargs) -> bytes:
    image = Image.new("RGB", size, color)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def rotated_jpeg(size=(80, 40)) -> bytes:
    """A JPEG stored landscape with EXIF orientation 6 (rotate 90° to show it upright)."""
    image = Image.new("RGB", size, (0, 128, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()
