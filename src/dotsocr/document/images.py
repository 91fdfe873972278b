"""Turning any raster image into an upright 8-bit RGB page."""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from dotsocr.errors import CorruptDocument, DocumentTooLarge, NotADocument

# We enforce our own, configurable limit (DocumentOptions.max_image_pixels) on the
# header's size before decoding; Pillow's fixed global one would shadow it.
Image.MAX_IMAGE_PIXELS = None
Image.init()  # register every plugin so READABLE_FORMATS resolve

READABLE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "GIF", "TIFF")
MULTI_PAGE_FORMATS = frozenset({"TIFF"})  # GIF, WebP and APNG frames are animation, not pages
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image a quarter
_SRGB = ImageCms.createProfile("sRGB")


def open_image(data: io.BufferedIOBase | bytes | str, source: str) -> Image.Image:
    """Open an image lazily (header only), mapping Pillow's errors to ours."""
    fp = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp, formats=READABLE_FORMATS)
    except UnidentifiedImageError:
        try:
            other = Image.open(fp)
        except Exception:
            other = None
        if other is not None:
            raise NotADocument(
                source,
                f"unsupported image format {other.format}: convert it to PNG, JPEG, TIFF or PDF",
            ) from None
        raise CorruptDocument(
            source, "the image is damaged and cannot be decoded: re-export or re-download it"
        ) from None


def frame_count(image: Image.Image) -> int:
    return getattr(image, "n_frames", 1) if image.format in MULTI_PAGE_FORMATS else 1


@contextmanager
def decoding(source: str) -> Iterator[None]:
    """Map Pillow's many decoding failures to one clear error."""
    try:
        yield
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise CorruptDocument(
            source, f"the image data is truncated or damaged ({exc}): re-export or re-download it"
        ) from None


def upright_size(image: Image.Image, source: str) -> tuple[int, int]:
    """The size once the EXIF orientation is applied (PNG may need to decode to find it)."""
    width, height = image.size
    with decoding(source):
        orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in _SWAPS_AXES else (width, height)


def check_pixels(size: tuple[int, int], limit: int | None, source: str, what: str) -> None:
    if limit is not None and size[0] * size[1] > limit:
        raise DocumentTooLarge(
            source,
            f"{what} is {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.0f} Mpx), above the "
            f"limit of {limit / 1e6:.0f} Mpx (decompression-bomb guard): raise "
            "--max-image-pixels if you trust this file",
        )


def to_page_image(
    image: Image.Image, source: str, *, max_pixels: int | None, notes: list[str]
) -> Image.Image:
    """Decode the current frame into an upright 8-bit RGB image of at most max_pixels.

    Appends a note for every conversion that changes what the model sees.
    """
    with decoding(source):
        if max_pixels and image.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the image is far too big.
            image.draft("RGB", _fit(image.size, max_pixels))
        image.load()
        orientation = image.getexif().get(0x0112, 1)
        upright = ImageOps.exif_transpose(image)
    if orientation not in (1, None):
        notes.append(f"EXIF orientation {orientation} applied")
    if max_pixels and upright.width * upright.height > max_pixels:
        # Shrink before colour conversion, so a huge bilevel scan never exists as RGB.
        if upright.mode in ("1", "P"):
            upright = upright.convert("L" if upright.mode == "1" else "RGBA")
        target = _fit(upright.size, max_pixels)
        notes.append(f"downscaled from {upright.width}x{upright.height} to {target[0]}x{target[1]}")
        upright = upright.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return _to_rgb(upright, notes)


def _fit(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    width, height = size
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        image = _scale_to_8_bits(image, notes)
        mode = image.mode
    icc = image.info.get("icc_profile")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        notes.append("transparency flattened on white")
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image, mode = flat, "RGB"
    if icc and mode in ("RGB", "CMYK"):
        converted = _icc_to_srgb(image, icc)
        if converted is not None:
            return converted
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    return image if mode == "RGB" else image.convert("RGB")


def _scale_to_8_bits(image: Image.Image, notes: list[str]) -> Image.Image:
    """Scale 16-bit or 32-bit grey into 0-255 rather than clipping it."""
    wide = image.convert("F") if image.mode == "F" else image.convert("I")
    low, high = wide.getextrema()
    if image.mode.startswith("I;16"):
        top = 65535
    elif high <= 255 and low >= 0:
        top = 255
    else:
        top = high if high > 0 else 1
    notes.append(f"{image.mode} grey scaled to 8 bits")
    return wide.point(lambda v: v * (255.0 / top)).convert("L")


def _icc_to_srgb(image: Image.Image, icc: bytes) -> Image.Image | None:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(image, profile, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None
