"""Image pages carry the DPI their file states, so the CPU engine is told the truth.

Measured: a 96-DPI newspaper scan told to Tesseract as 200 DPI lost half its text.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image, TiffImagePlugin

from dotsocr.document import DocumentOptions, Page, open_document
from dotsocr.engines.cpu import _dpi
from dotsocr.models import get_profile


def encode(fmt: str, size: tuple[int, int] = (60, 40), **params) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, fmt, **params)
    return buffer.getvalue()


def dpis(data: bytes, **options) -> list[float | None]:
    with open_document(data, DocumentOptions(**options), name="test-input") as doc:
        pages = list(doc.pages())
    assert all(isinstance(page, Page) for page in pages), pages
    return [page.dpi for page in pages]


@pytest.mark.parametrize(
    ("fmt", "params", "dpi"),
    [
        ("PNG", {"dpi": (96, 96)}, 96),  # pHYs holds dots per metre: 96.012 comes back
        ("PNG", {"dpi": (10, 10)}, None),  # implausible
        ("PNG", {"dpi": (72, 72)}, 72),
        ("PNG", {"dpi": (1200, 1200)}, 1200),
        ("PNG", {"dpi": (1300, 1300)}, None),
        ("PNG", {"dpi": (300, 50)}, None),  # one axis out of range
        ("PNG", {}, None),
        ("JPEG", {"dpi": (300, 300)}, 300),
        ("JPEG", {}, None),  # JFIF states an aspect ratio of 1:1, not a resolution
        ("BMP", {"dpi": (204, 98)}, 151),  # a fax's oblong pixels: the mean
        ("TIFF", {"dpi": (400, 400)}, 400),
        ("TIFF", {"resolution": 118.11, "resolution_unit": "cm"}, 300),
        ("TIFF", {"resolution": 300, "resolution_unit": "none"}, None),
        ("TIFF", {}, None),  # Pillow writes 1x1 with no unit
        ("WEBP", {}, None),
        ("GIF", {}, None),
    ],
)
def test_an_image_page_carries_the_dpi_its_file_states(fmt, params, dpi):
    assert dpis(encode(fmt, **params)) == [dpi]


def test_each_tiff_page_has_its_own_dpi():
    buffer = io.BytesIO()
    pages = [((300, 300), "inch"), ((150, 150), "inch"), ((300, 300), "none"), (None, None)]
    with TiffImagePlugin.AppendingTiffWriter(buffer, True) as tiff:
        for dpi, unit in pages:
            params = {"resolution": dpi[0], "y_resolution": dpi[1]} if dpi else {}
            params |= {"resolution_unit": unit} if unit else {}
            Image.new("L", (60, 40), 255).save(tiff, "TIFF", **params)
            tiff.newFrame()
    # The third page states pixels per unknown unit: Pillow's info keeps the second's DPI.
    assert dpis(buffer.getvalue()) == [300, 150, None, None]


def test_a_capped_image_keeps_the_dpi_of_its_frame_and_tesseract_is_told_the_scaled_one():
    data = encode("PNG", (1700, 2200), dpi=(96, 96))
    with open_document(data, DocumentOptions(max_pixels=1000 * 1000)) as doc:
        page = next(doc.pages())
    assert isinstance(page, Page)
    assert (page.width, page.height, page.dpi) == (1700, 2200, 96)  # the frame's pixels
    prepared = get_profile("dots.ocr").prepare(page.image, page.width, page.height, dpi=page.dpi)
    scale = prepared.geometry.resized_width / page.width
    assert _dpi(prepared) == pytest.approx(max(70.0, 96 * scale))


def test_real_images_state_their_dpi(corpus):
    assert dpis((corpus / "robustness/derived/png_bytes_named.pdf").read_bytes()) == [200]
    g4 = (corpus / "robustness/derived/tesseract_3pages_g4.tif").read_bytes()
    assert dpis(g4) == [300, 300, 300]
    # docling's TIFF states 1x1 (no unit): no DPI, as before.
    assert dpis((corpus / "docling/tests/data/tiff/sources/2206.01062.tif").read_bytes()) == [
        None,
        None,
    ]
