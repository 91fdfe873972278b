"""Page images as sent to a model server: the fewest bytes that decode to the same pixels.

vLLM turns every image into RGB before its processor sees it, so a page whose three
channels agree everywhere goes as a one-channel PNG, and a page of pure black and white
as a 1-bit PNG: the model sees exactly the pixels an RGB PNG would give, from a third
(or a twenty-fourth) of the data to compress here and to inflate in vLLM's API server.

PNGs are written by OpenCV (libpng, zlib level 1; no filter for grey pages, the Up filter
for colour, which photographs need): two to three times as fast as Pillow's PNG writer,
whose adaptive choice of filter costs more than the compression itself, for bytes within
a few percent (bench/prepare.py measures them side by side).
JPEG is sent only when asked for: it is lossy, and its effect on accuracy is unmeasured.
"""

from __future__ import annotations

import base64
import functools
import io
from types import ModuleType
from typing import Literal

import numpy as np
from PIL import Image

ImageFormat = Literal["png", "jpeg"]
JPEG_QUALITY = 90


def grey_channel(pixels: np.ndarray) -> np.ndarray | None:
    """The one channel of three-channel pixels (RGB or BGR) whose channels all agree, or
    None when any pixel has colour."""
    first, second, third = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    if np.array_equal(first, second) and np.array_equal(second, third):
        return np.ascontiguousarray(second)
    return None


def compact(image: Image.Image) -> Image.Image:
    """``image`` as one-channel grey when all its pixels are grey (lossless); else itself."""
    if image.mode != "RGB":
        return image
    grey = grey_channel(np.asarray(image))
    return image if grey is None else Image.fromarray(grey)


def bilevel(image: Image.Image) -> bool:
    """Whether a grey image holds only pure black and pure white."""
    histogram = image.histogram()
    return sum(histogram[1:255]) == 0


def encode(image: Image.Image, image_format: ImageFormat = "png") -> tuple[bytes, str]:
    """The image's bytes in ``image_format`` and their media type.

    ``image`` is RGB or L (``compact``'s result); an L image of only black and white is
    written with one bit a pixel.
    """
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    cv2 = _opencv()
    if cv2 is None:
        return _by_pillow(image, image_format)
    if image.mode == "RGB":  # OpenCV's order, in the one copy out of Pillow
        raw = image.tobytes("raw", "BGR")
        pixels = np.frombuffer(raw, np.uint8).reshape(image.height, image.width, 3)
    else:
        pixels = np.asarray(image)
    if image_format == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        return _encoded(cv2.imencode(".jpg", pixels, params)), "image/jpeg"
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if image.mode == "L" and bilevel(image):
        params += [cv2.IMWRITE_PNG_BILEVEL, 1]
    else:  # grey pages are smaller and faster unfiltered; photos in colour need Up
        png_filter = cv2.IMWRITE_PNG_FILTER_NONE if image.mode == "L" else cv2.IMWRITE_PNG_FILTER_UP
        params += [cv2.IMWRITE_PNG_FILTER, png_filter]
    return _encoded(cv2.imencode(".png", pixels, params)), "image/png"


@functools.cache
def _opencv() -> ModuleType | None:
    """OpenCV, imported where pages are sent (30 MB, 0.1 s), on one thread a call: pages
    are encoded in parallel already, and its pool's idle threads spin on sched_yield.
    None where it cannot load (opencv-python without libGL on a bare server): Pillow
    then writes the same pixels, two to three times slower."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(1)
    return cv2


def _by_pillow(image: Image.Image, image_format: ImageFormat) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue(), "image/jpeg"
    if image.mode == "L" and bilevel(image):
        image = image.convert("1")
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue(), "image/png"


def decode_data_url(url: str) -> Image.Image:
    """The image a data URL of ours holds, decoded."""
    image = Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2])))
    image.load()
    return image


def _encoded(result: tuple[bool, np.ndarray]) -> bytes:
    ok, data = result
    if not ok:  # OpenCV says no more than this
        raise ValueError("the page image could not be encoded")
    return data.tobytes()
