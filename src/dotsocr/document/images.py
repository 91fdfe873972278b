"""Turning any raster image into an upright 8-bit RGB page."""

from __future__ import annotations

import io
import math
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from PIL import Image, ImageCms, ImageOps

from dotsocr.errors import CorruptDocument, DocumentTooLarge, NotADocument

Image.init()  # register every plugin so READABLE_FORMATS resolve

READABLE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "GIF", "TIFF")
MULTI_PAGE_FORMATS = frozenset({"TIFF"})  # GIF, WebP and APNG frames are animation, not pages
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image a quarter
# A DPI an image states is believed in this range (a scan, a screenshot); outside it, none.
PLAUSIBLE_DPI = (72.0, 1200.0)
_X_RESOLUTION, _Y_RESOLUTION, _RESOLUTION_UNIT = 282, 283, 296  # TIFF tags
_SRGB = ImageCms.createProfile("sRGB")
_PILLOW_LIMIT_LOCK = threading.Lock()


def _pixels(count: int) -> str:
    return f"{count / 1e6:,.0f} Mpx" if count >= 10_000_000 else f"{count:,} pixels"


def _too_large(source: str, what: str, limit: int | None) -> DocumentTooLarge:
    return DocumentTooLarge(
        source,
        f"{what}, above the limit of {_pixels(limit or 0)} (decompression-bomb guard): raise "
        "--max-image-pixels if you trust this file",
    )


def check_pixels(size: tuple[int, int], limit: int | None, source: str, what: str) -> None:
    if limit is not None and size[0] * size[1] > limit:
        count = _pixels(size[0] * size[1])
        raise _too_large(source, f"{what} is {size[0]}x{size[1]} ({count})", limit)


@contextmanager
def decoding(source: str, limit: int | None) -> Iterator[None]:
    """Let Pillow open what our limit allows, and map its many failures to one clear error.

    Pillow's bomb limit is global; it is raised only while we open or seek, and only
    when our own limit (checked on every header) is the higher one.
    """
    pillow = Image.MAX_IMAGE_PIXELS
    lift = pillow is not None and (limit is None or limit > 2 * pillow)
    with _PILLOW_LIMIT_LOCK if lift else nullcontext(), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if lift:
            Image.MAX_IMAGE_PIXELS = None if limit is None else limit // 2 + 1
        try:
            yield
        except Image.DecompressionBombError as exc:
            count = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"has {_pixels(int(count[1]))}" if count else "is too large"
            raise _too_large(source, f"the image {size}", limit) from None
        except (DocumentTooLarge, NotADocument, CorruptDocument):
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, ...
            raise CorruptDocument(
                source,
                f"the image cannot be decoded ({exc}): the file is truncated, damaged or an "
                "unusual variant; re-export it as PNG, JPEG or TIFF",
            ) from None
        finally:
            if lift:
                Image.MAX_IMAGE_PIXELS = pillow


def open_image(data: bytes | Path, source: str, limit: int | None) -> Image.Image:
    """Open an image lazily (header only); Pillow then owns and closes the file."""
    with decoding(source, limit):
        image = Image.open(
            io.BytesIO(data) if isinstance(data, bytes) else data, formats=READABLE_FORMATS
        )
    check_pixels(image.size, limit, source, "image")
    return image


def identify(data: bytes | Path) -> str | None:
    """The name of any format Pillow knows, readable by us or not."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as other:
            return other.format
    except Exception:
        return None


def frame_count(image: Image.Image) -> int:
    return getattr(image, "n_frames", 1) if image.format in MULTI_PAGE_FORMATS else 1


def upright_size(image: Image.Image) -> tuple[int, int]:
    """The size once the EXIF orientation is applied (PNG may decode to find it)."""
    width, height = image.size
    return (height, width) if _orientation(image) in _SWAPS_AXES else (width, height)


def _orientation(image: Image.Image) -> int:
    return image.getexif().get(0x0112, 1) or 1


def stated_dpi(image: Image.Image) -> float | None:
    """The resolution the current frame's file states, or None when absent or implausible.

    PNG (pHYs), JPEG (JFIF, or EXIF), BMP and TIFF say it; Pillow turns dots per metre or
    centimetre into DPI, so a PNG's 96 comes back as 96.012 and is rounded to 96.0. A
    TIFF frame's own tags are read, since Pillow keeps an earlier frame's DPI when a later
    one states none. Both axes must lie in PLAUSIBLE_DPI (the 1x1 of a TIFF that states no
    resolution, or a JFIF aspect ratio, says nothing); the DPI is their mean.
    """
    if image.format == "TIFF":
        tags = getattr(image, "tag_v2", {})
        scale = {2: 1.0, 3: 2.54}.get(tags.get(_RESOLUTION_UNIT, 2))  # inch unless stated
        x, y = tags.get(_X_RESOLUTION), tags.get(_Y_RESOLUTION)
        stated = (x * scale, y * scale) if scale and x is not None and y is not None else None
    else:
        stated = image.info.get("dpi")
    try:
        x, y = (round(float(axis), 1) for axis in stated)  # type: ignore[union-attr]
    except (TypeError, ValueError, ZeroDivisionError):  # absent, malformed, or 1/0
        return None
    low, high = PLAUSIBLE_DPI
    if low <= x <= high and low <= y <= high:  # False for NaN too
        return round((x + y) / 2, 1)
    return None


def to_page_image(
    image: Image.Image,
    source: str,
    *,
    max_pixels: int | None,
    notes: list[str],
    sent_size: Callable[[int, int], tuple[int, int]] | None = None,
) -> Image.Image:
    """Decode the current frame into an upright 8-bit RGB image of at most max_pixels, or
    with ``sent_size`` (a model's sizing of the capped size) at that size, resized once,
    and grey when it is.

    Appends a note for every conversion that changes what the model sees. Call it
    inside ``decoding()``.
    """
    upright_wh = upright_size(image)
    capped = capped_size(image, max_pixels)
    target = sent_size(*capped) if sent_size else capped
    if image.format == "JPEG" and target != upright_wh:
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the image is far too big.
        swapped = upright_wh != image.size
        image.draft("RGB", target[::-1] if swapped else target)
    image.load()
    upright = image
    orientation = _orientation(image)
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied")
        upright = ImageOps.exif_transpose(image)
    if upright.size != target:
        if capped != upright_wh:
            notes.append(
                f"downscaled from {upright_wh[0]}x{upright_wh[1]} to {target[0]}x{target[1]}"
            )
        upright = resized(upright, target, notes)
    # A grey page for a model stays grey: it is sent in one channel (encoding.compact).
    keep = sent_size is not None and upright.mode == "L"
    ready = upright if keep else _to_rgb(upright, notes)
    # The file's own frame is reused by seek() and closed with the document: never hand it out.
    return ready.copy() if ready is image else ready


def resized(
    image: Image.Image, size: tuple[int, int], notes: list[str] | None = None
) -> Image.Image:
    """One resize to ``size``, before colour conversion so that a huge bilevel scan never
    exists as RGB.

    Pillow's bilinear filter widens with the scale (an antialiasing triangle over each
    output pixel's footprint) and ``reducing_gap`` first shrinks by whole factors with a
    box filter: for text this is as sharp as bicubic or Lanczos at a third to half their
    time (a 600-DPI letter page to the model's size: 0.15 s in grey, against 0.38 s).
    """
    if image.mode in ("1", "P"):
        image = image.convert("L" if image.mode == "1" else "RGBA")
    elif image.mode.startswith("I;16") or image.mode in ("I", "F"):
        image = _scale_to_8_bits(image, [] if notes is None else notes)
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def capped_size(image: Image.Image, max_pixels: int | None) -> tuple[int, int]:
    """The upright size of the current frame, within ``max_pixels`` when given."""
    size = upright_size(image)
    return _fit(size, max_pixels) if max_pixels else size


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
    """Map 16-bit, 32-bit and float grey onto 0-255 by scaling, never by clipping.

    16-bit data keeps its full scale (0-65535), so a dark scan stays dark; float data
    in 0..1 is scaled by 255; anything else is stretched from its minimum to maximum.
    """
    wide = image.convert("F")
    low, high = wide.getextrema()
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and 255 < high <= 65535):
        low, high = 0, 65535
    elif low >= 0 and high <= (1.0 if image.mode == "F" else 255):
        low, high = 0, (1.0 if image.mode == "F" else 255)
    span = (high - low) or 1
    notes.append(f"{image.mode} grey scaled to 8 bits")
    return wide.point(lambda v: (v - low) * (255.0 / span)).convert("L")


def _icc_to_srgb(image: Image.Image, icc: bytes) -> Image.Image | None:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(image, profile, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None
