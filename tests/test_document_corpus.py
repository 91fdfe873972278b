"""Each awkward input from the corpus gives its documented result."""

from __future__ import annotations

import numpy as np
import pytest

from dotsocr.document import DocumentOptions, Page, PageFailure, open_document
from dotsocr.errors import (
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    NotADocument,
    PasswordError,
)
from dotsocr.models.dots_ocr import DotsOCR

ROBUST = "robustness/derived/"
BUDGET = DotsOCR().max_pixels  # the model's pixel budget, which callers pass as max_pixels
PDFJS = "pdfjs/test/pdfs/"


def all_pages(path, **options):
    with open_document(path, DocumentOptions(**options)) as doc:
        return list(doc.pages())


def only_page(path, **options) -> Page:
    (page,) = all_pages(path, **options)
    assert isinstance(page, Page), page
    return page


def has_ink(image) -> bool:
    return int(np.asarray(image.convert("L")).min()) < 128


def mean(image) -> float:
    return float(np.asarray(image.convert("L")).mean())


@pytest.mark.parametrize("name", ["zero_byte.pdf", "zero_byte.png", "zero_byte.jpg"])
def test_zero_byte_files_are_refused_by_name(corpus, name):
    with pytest.raises(EmptyDocument, match=r"zero_byte\..*: the file is empty \(0 bytes\)"):
        open_document(corpus / ROBUST / name)


def test_html_error_page_named_pdf_is_not_a_document(corpus):
    with pytest.raises(NotADocument, match="not a document: it is an HTML page"):
        open_document(corpus / ROBUST / "html_error_page_named.pdf")


def test_png_named_pdf_is_read_as_png(corpus):
    page = only_page(corpus / ROBUST / "png_bytes_named.pdf")
    assert (page.width, page.height) == (640, 480)
    assert page.dpi == 200 and page.image.mode == "RGB"  # the PNG states 200 DPI


def test_truncated_pdf_is_repaired_and_yields_its_pages(corpus):
    pages = all_pages(corpus / ROBUST / "truncated_multi_page.pdf")
    assert len(pages) == 5
    assert all(isinstance(p, Page) for p in pages)
    assert "damaged PDF repaired with qpdf" in pages[0].notes
    assert mean(pages[0].image) < 254  # real content, not blank pages


@pytest.mark.parametrize("name", ["helloworld-bad.pdf", "xref_command_missing.pdf"])
def test_recoverable_malformed_pdfs_render(corpus, name):
    page = only_page(corpus / PDFJS / name)
    assert page.width > 100 and mean(page.image) < 255


def test_absurd_page_box_is_a_page_error_not_a_crash(corpus):
    (page,) = all_pages(corpus / PDFJS / "poppler-85140-0.pdf")
    assert isinstance(page, PageFailure)
    assert isinstance(page.error, DocumentTooLarge)
    assert "absurd size" in str(page.error) and "poppler-85140-0.pdf" in str(page.error)


@pytest.mark.parametrize(
    ("path", "password"),
    [
        (PDFJS + "issue6010_1.pdf", "abc"),
        (PDFJS + "issue3371.pdf", "ELXRTQWS"),
        (ROBUST + "earnings_user_pw_test.pdf", "test"),
        ("docling/tests/data/pdf_password/sources/2206.01062_pg3.pdf", "1234"),
    ],
)
def test_encrypted_pdfs_need_their_password(corpus, path, password):
    with pytest.raises(PasswordError, match="encrypted: pass its password with --password"):
        open_document(corpus / path)
    with pytest.raises(PasswordError, match="wrong password"):
        open_document(corpus / path, DocumentOptions(password=password + "x"))
    pages = all_pages(corpus / path, password=password)
    assert pages and all(isinstance(p, Page) for p in pages)
    assert has_ink(pages[0].image)


def test_owner_password_also_opens(corpus):
    path = corpus / "docling/tests/data/pdf_password/sources/2206.01062_pg3.pdf"
    assert isinstance(all_pages(path, password="owner")[0], Page)


def test_empty_user_password_opens_silently(corpus):
    page = only_page(corpus / PDFJS / "bug900822.pdf")
    assert has_ink(page.image)
    # A password meant for other files of a batch does not lock this one out.
    assert has_ink(only_page(corpus / PDFJS / "bug900822.pdf", password="for-other-files").image)


def test_pdf_renders_at_200_dpi_by_default(corpus):
    page = only_page(corpus / PDFJS / "cmykjpeg.pdf")  # US letter, CMYK JPEG inside
    assert (page.width, page.height, page.dpi) == (1700, 2200, 200)
    r, g, b = (float(np.asarray(page.image)[..., i].mean()) for i in range(3))
    assert max(r, g, b) > 40  # a colour photo, not an inverted black slab


def test_dpi_option_scales_the_render(corpus):
    page = only_page(corpus / PDFJS / "cmykjpeg.pdf", dpi=100)
    assert (page.width, page.height, page.dpi) == (850, 1100, 100)


def test_huge_page_renders_at_the_dpi_that_fits_the_pixel_budget(corpus):
    page = only_page(corpus / ROBUST / "huge_page_14400pt.pdf", max_pixels=BUDGET)
    assert page.width * page.height <= BUDGET
    assert page.width >= 3300  # the most the budget allows, not a 72-DPI fallback
    assert page.dpi == pytest.approx(16.8, abs=0.1)
    assert any("to fit the 11,289,600 pixel cap" in n for n in page.notes)


def test_a0_page_with_rotate_90_is_landscape_and_capped(corpus):
    page = only_page(corpus / PDFJS / "issue14497.pdf", max_pixels=BUDGET)
    assert page.width > page.height
    assert page.width * page.height <= BUDGET


def test_rotate_is_honoured(corpus):
    pages = all_pages(corpus / PDFJS / "rotation.pdf")
    assert [(p.width, p.height) for p in pages] == [(1700, 2200), (2200, 1700)]
    mismatch = only_page(
        corpus / "docling/tests/data/ocr/sources/sample_with_rotation_mismatch.pdf"
    )
    assert mismatch.height > mismatch.width  # landscape MediaBox turned by /Rotate 90


def test_page_selection_on_a_pdf(corpus):
    pages = all_pages(corpus / "docling/tests/data/pdf/sources/redp5110_sampled.pdf", pages="2-3,7")
    assert [p.index for p in pages] == [1, 2, 6]


def test_cmyk_jpeg_becomes_rgb_not_inverted(corpus):
    page = only_page(corpus / ROBUST / "sroie_000_cmyk.jpg")
    assert page.image.mode == "RGB"
    assert mean(page.image) > 180  # a receipt: mostly white paper
    assert "CMYK converted to RGB" in page.notes


def test_exif_orientation_is_applied(corpus):
    page = only_page(corpus / ROBUST / "sroie_001_exif_orient6.jpg")
    assert (page.width, page.height) == (439, 1004)  # stored 1004x439, tag 6
    assert page.image.size == (439, 1004)
    # Upright text runs horizontally: rows vary far more than columns.
    ink = 255 - np.asarray(page.image.convert("L"), dtype=float)
    assert ink.mean(axis=1).std() > ink.mean(axis=0).std()


def test_16_bit_grey_is_scaled_not_clipped(corpus):
    page = only_page(corpus / ROBUST / "sroie_002_gray16.png")
    assert mean(page.image) == pytest.approx(241.2, abs=0.5)  # clipping gives 254.9


def test_rgb48_is_scaled_to_8_bits(corpus):
    page = only_page(corpus / ROBUST / "phototest_rgb48.png")
    reference = only_page(corpus / "tesseract_test/testing/phototest.tif")
    assert mean(page.image) == pytest.approx(mean(reference.image), abs=1.0)


def test_multi_page_g4_tiff_yields_every_page(corpus):
    pages = all_pages(corpus / ROBUST / "tesseract_3pages_g4.tif")
    assert [(p.width, p.height) for p in pages] == [(640, 480), (2560, 3300), (3312, 2550)]
    assert all(p.image.mode == "RGB" for p in pages)


def test_rgba_tiff_is_flattened_on_white(corpus):
    pages = all_pages(corpus / "docling/tests/data/tiff/sources/2206.01062.tif")
    assert len(pages) == 2
    assert mean(pages[0].image) > 200  # transparent background must not turn black
    assert "transparency flattened on white" in pages[0].notes


def test_webp(corpus):
    page = only_page(corpus / "docling/tests/data/webp/sources/webp-test.webp")
    assert (page.width, page.height) == (2000, 2829)


def test_huge_page_without_a_pixel_cap_is_refused_not_rendered(corpus):
    (page,) = all_pages(corpus / ROBUST / "huge_page_14400pt.pdf")
    assert isinstance(page, PageFailure) and isinstance(page.error, DocumentTooLarge)
    assert "page 1 is 40000x40000 (1,600 Mpx)" in str(page.error)


def test_decompression_bomb_is_refused_before_decoding(corpus):
    with pytest.raises(DocumentTooLarge, match=r"image has 400 Mpx, above the limit of 179 Mpx"):
        open_document(corpus / ROBUST / "huge_20000x20000_1bit.png")


def test_decompression_bomb_limit_can_be_raised(corpus):
    page = only_page(
        corpus / ROBUST / "huge_20000x20000_1bit.png",
        max_image_pixels=400_000_000,
        max_pixels=BUDGET,
    )
    assert (page.width, page.height) == (20000, 20000)
    assert page.image.width * page.image.height <= BUDGET


def test_skinny_page_keeps_its_shape_within_the_cap(corpus):
    pages = all_pages(corpus / "olmocr/tests/gnarly_pdfs/skinnypage.pdf", max_pixels=BUDGET)
    tall = pages[1]
    assert tall.height > 50 * tall.width
    assert tall.width * tall.height <= BUDGET


def test_bytes_input_reads_like_a_path(corpus):
    path = corpus / PDFJS / "rotation.pdf"
    with open_document(path.read_bytes(), name="upload.pdf") as doc:
        pages = list(doc.pages())
    assert doc.source == "upload.pdf" and len(pages) == 2


def test_damaged_image_data_is_a_clear_error(corpus, tmp_path):
    data = (corpus / ROBUST / "sroie_002_gray16.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    (page,) = all_pages(cut)
    assert isinstance(page, PageFailure) and isinstance(page.error, CorruptDocument)
    assert str(page.error).startswith(f"{cut}: the image cannot be decoded")
    assert "re-export it" in str(page.error)
