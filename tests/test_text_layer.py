"""The PDF text layer: lines in the render's pixels, and when to trust them over OCR."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image
from rapidfuzz import fuzz

from dotsocr.document.textlayer import TextLayer, extract
from dotsocr.document.textlayer_trust import Verdict
from pdf_support import text_pdf

SCALE = 200 / 72
DOCLING = "docling/tests/data/pdf"
PDFS = "olmocr/olmocr/bench/sample_data/pdfs"


def _read(path: Path | bytes, index: int = 0) -> tuple[TextLayer, Image.Image]:
    document = pdfium.PdfDocument(path)
    try:
        page = document[index]
        return extract(page, SCALE), page.render(scale=SCALE).to_pil()
    finally:
        document.close()


def _ink(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L")) < 128


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


# Born-digital pages


@pytest.mark.parametrize(
    ("name", "pages"),
    [
        ("2305.03393v1-pg9", [0]),
        ("multi_page", [0, 1, 2]),
        ("redp5110_sampled", [1, 3]),
        ("normal_4pages", [2]),  # page 1's table cells sit closer than a gutter
        ("code_and_formula", [0]),
        ("amt_handbook_sample", [0]),  # two columns, a gutter of 1.2 em
        ("right_to_left_01", [0]),  # Arabic, with Latin words in it
    ],
)
def test_born_digital_pages_are_trusted_and_read_as_docling_reads_them(
    corpus: Path, name: str, pages: list[int]
) -> None:
    truth = _words((corpus / DOCLING / "groundtruth" / f"{name}.md").read_text())
    for index in pages:
        layer, image = _read(corpus / DOCLING / "sources" / f"{name}.pdf", index)
        assert layer.verdict(image) == Verdict(True, "text layer")
        lines = [_words(line.text) for line in layer.lines if len(line.text) >= 30]
        assert len(lines) >= 5
        scores = sorted(fuzz.partial_ratio(line, truth) for line in lines)
        assert scores[len(scores) // 2] >= 98, (name, index)  # the median line: all but exact
        assert scores[len(scores) // 10] >= 85, (name, index)  # nine lines in ten


def test_lines_carry_words_sizes_and_bold(corpus: Path) -> None:
    layer, _ = _read(corpus / DOCLING / "sources" / "redp5110_sampled.pdf", 2)
    for line in layer.lines:
        assert line.text == " ".join(word.text for word in line.words)
        assert line.confidence is None and line.block is None
        x1, y1, x2, y2 = line.bbox
        assert all(x1 <= w.bbox[0] and w.bbox[2] <= x2 for w in line.words)
        assert 0 < line.size <= y2 - y1 + 0.01
    assert any(line.bold for line in layer.lines)
    assert not all(line.bold for line in layer.lines)


def test_ligatures_and_line_end_hyphens_read_as_text(corpus: Path) -> None:
    layer, _ = _read(corpus / DOCLING / "sources" / "2305.03393v1-pg9.pdf")
    text = "\n".join(line.text for line in layer.lines)
    assert "mAP scores even on difficult financial tables" in text  # ﬃ, one line
    assert "architecture, trained only on PubTabNet [22]. Ef-" in text


# Columns


def test_two_columns_at_one_height_stay_apart(corpus: Path) -> None:
    """The lower half of this page is set in two columns (and a margin column) with a
    gutter of 12 points at x = 353 pt; lines of both columns share their heights."""
    layer, image = _read(corpus / PDFS / "multi_column_miss.pdf")
    gutter = 353 * SCALE
    lower = [line for line in layer.lines if line.bbox[1] > image.height / 2]
    left = [line for line in lower if line.bbox[2] < gutter]
    right = [line for line in lower if line.bbox[0] > gutter]
    assert len(left) > 30 and len(right) > 30
    assert [line.text for line in lower if line.bbox[0] < gutter < line.bbox[2]] == []
    texts = {line.text for line in layer.lines}
    assert "Over the past three decades increasing" in texts  # after a drop cap
    assert "unprecedented expansion of power and influ-" in texts  # beside it


def test_a_gutter_splits_lines_drawn_across_it_in_one_go() -> None:
    """Left and right column lines drawn one after the other, at one height, with a
    gutter of 1.5 em (a narrow one): each line ends at the gutter, none at a word gap."""
    left = [(72, 700 - 14 * i, f"left column row {i} of words") for i in range(5)]
    widest, _ = _read(text_pdf(left))
    gutter = max(line.bbox[2] for line in widest.lines) / SCALE + 1.5 * 12
    right = [(gutter, 700 - 14 * i, f"right column row {i}") for i in range(5)]
    layer, _ = _read(text_pdf(sorted(left + right, key=lambda row: -row[1])))
    texts = sorted(line.text for line in layer.lines)
    assert texts == sorted(text for _, _, text in left + right)


# Rotation


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_pages_put_boxes_where_the_render_put_the_text(corpus: Path, rotation: int) -> None:
    """The same page with /Rotate set: each line's box is the upright box, turned."""
    path = corpus / DOCLING / "sources" / "multi_page.pdf"
    upright, image = _read(path)
    document = pdfium.PdfDocument(path)
    try:
        page = document[0]
        page.set_rotation(rotation)
        turned, turned_image = extract(page, SCALE), page.render(scale=SCALE).to_pil()
    finally:
        document.close()
    assert turned_image.size == image.rotate(-rotation, expand=True).size
    # PDFium may guess a space more or less on a turned page: compare without them.
    boxes: dict[str, list[tuple[float, ...]]] = {}
    for line in turned.lines:
        boxes.setdefault(line.text.replace(" ", ""), []).append(line.bbox)
    assert len(turned.lines) == len(upright.lines)
    for line in upright.lines:
        expected = _rotate(line.bbox, rotation, image.size)
        found = boxes[line.text.replace(" ", "")]
        assert any(box == pytest.approx(expected, abs=1.0) for box in found), line.text
    _assert_boxes_on_ink(turned, turned_image)
    assert _ink_in_boxes(turned, turned_image) > 0.9  # a page of prose: the boxes hold it
    assert turned.verdict(turned_image).trusted


@pytest.mark.parametrize(
    "path", ["olmocr/tests/gnarly_pdfs/edgar-rotated90.pdf", "pdfjs/test/pdfs/rotation.pdf"]
)
def test_rotated_corpus_pages_put_boxes_on_ink(corpus: Path, path: str) -> None:
    document = pdfium.PdfDocument(corpus / path)
    index = next(i for i in range(len(document)) if document[i].get_rotation())
    document.close()
    layer, image = _read(corpus / path, index)
    assert len(layer.lines) >= 2
    _assert_boxes_on_ink(layer, image)
    assert layer.verdict(image).trusted


def _rotate(box: tuple[float, ...], rotation: int, size: tuple[int, int]) -> tuple[float, ...]:
    """Where ``box`` goes when an image of ``size`` turns ``rotation`` degrees clockwise."""
    x1, y1, x2, y2 = box
    width, height = size
    if rotation == 90:
        return (height - y2, x1, height - y1, x2)
    if rotation == 180:
        return (width - x2, height - y2, width - x1, height - y1)
    return (y1, width - x2, y2, width - x1)


def _assert_boxes_on_ink(layer: TextLayer, image: Image.Image) -> None:
    ink = _ink(image)
    for line in layer.lines:
        x1, y1, x2, y2 = (round(v) for v in line.bbox)
        assert ink[y1:y2, x1:x2].mean() > 0.03, line.text  # print fills 10-30% of its box


def _ink_in_boxes(layer: TextLayer, image: Image.Image) -> float:
    ink = _ink(image)
    inside = np.zeros_like(ink)
    for line in layer.lines:
        x1, y1, x2, y2 = (round(v) for v in line.bbox)
        inside[max(0, y1 - 2) : y2 + 2, max(0, x1 - 2) : x2 + 2] = True
    return ink[inside].sum() / ink.sum()


# Layers not to trust


def test_a_scan_without_text_is_no_text_layer(corpus: Path) -> None:
    layer, image = _read(corpus / "docling/tests/data/ocr/sources/ocr_test_rotated_90.pdf")
    assert (layer.lines, layer.chars) == ([], 0)
    assert layer.verdict(image) == Verdict(False, "no text layer")


@pytest.mark.parametrize(
    "path",
    [
        f"{PDFS}/small_page_size.pdf",
        "olmocr/tests/gnarly_pdfs/handwriting_bad_ocr.pdf",
        f"{DOCLING}/invisible_text_layer.pdf",
        "olmocr/tests/gnarly_pdfs/newspaper.pdf",  # OCR text under the scan's image
    ],
)
def test_an_earlier_ocr_layer_is_invisible_text(corpus: Path, path: str) -> None:
    layer, image = _read(corpus / path)
    assert layer.invisible > layer.chars
    assert layer.verdict(image) == Verdict(False, "invisible text layer (an earlier OCR)")


def test_invisible_text_is_counted_not_read(corpus: Path) -> None:
    scan = _scan(corpus)
    rows = [(72, 700 - 14 * i, f"hidden words {i}") for i in range(20)]
    layer, image = _read(text_pdf(rows, mode=3, image=scan))
    assert (layer.lines, layer.chars) == ([], 0)
    assert layer.invisible == sum(len(text.replace(" ", "")) for _, _, text in rows)
    assert layer.verdict(image).reason == "invisible text layer (an earlier OCR)"


def test_text_under_the_page_image_is_hidden_text(corpus: Path) -> None:
    rows = [(72, 700 - 14 * i, f"words under the scan {i}") for i in range(20)]
    layer, image = _read(text_pdf(rows, image=_scan(corpus), under=True))
    assert layer.lines == [] and layer.invisible > 0
    assert layer.verdict(image).reason == "invisible text layer (an earlier OCR)"
    above, _ = _read(text_pdf(rows, image=_scan(corpus)))
    assert len(above.lines) == 20 and above.invisible == 0


def test_text_off_the_page_is_left_out() -> None:
    layer, _ = _read(text_pdf([(72, 700, "on the page"), (-400, 700, "off the page")]))
    assert [line.text for line in layer.lines] == ["on the page"]
    assert layer.chars == len("onthepage")


@pytest.mark.parametrize(
    ("path", "index"),
    [
        (f"{PDFS}/test-graphical-text.pdf", 0),  # a poster: a photo with captions
        (f"{PDFS}/headers_footers/fff590bed29a2854ac1f874dad5752ede1aa_pg1.pdf", 0),
        (f"{DOCLING}/sources/redp5110_sampled.pdf", 0),  # a cover drawing
        (f"{DOCLING}/sources/picture_classification.pdf", 0),  # charts
        (f"{DOCLING}/sources/right_to_left_03.pdf", 0),  # a ruled form
    ],
)
def test_pictures_and_rules_beside_the_text_keep_it_trusted(
    corpus: Path, path: str, index: int
) -> None:
    layer, image = _read(corpus / path, index)
    assert layer.verdict(image) == Verdict(True, "text layer")


def test_a_page_whose_words_are_drawn_as_graphics_is_not_trusted(corpus: Path) -> None:
    """A diagram whose labels are shapes, with one word of real text."""
    layer, image = _read(corpus / "olmocr/tests/gnarly_pdfs/ambiguous.pdf")
    assert [line.text for line in layer.lines] == ["Hello"]
    assert layer.verdict(image).reason.startswith("text layer covers")


def test_a_scan_with_a_small_visible_layer_is_not_trusted(corpus: Path) -> None:
    """A stamp or header drawn as text on a scanned page: most of the print is pixels."""
    scan = _scan(corpus)
    layer, image = _read(text_pdf([(72, 770, "Received 2024-03-01, archive copy")], image=scan))
    assert [line.text for line in layer.lines] == ["Received 2024-03-01, archive copy"]
    verdict = layer.verdict(image)
    assert not verdict.trusted
    match = re.fullmatch(r"text layer covers (\d+)% of the page's ink", verdict.reason)
    assert match and int(match[1]) < 20


def test_a_layer_of_private_use_glyphs_is_garbage() -> None:
    layer, image = _read(_garbage_pdf())
    assert layer.unmapped > 0 and layer.chars == 0
    assert layer.verdict(image) == Verdict(False, "garbage text layer (100% unmapped glyphs)")


# Making PDFs


def _scan(corpus: Path) -> Image.Image:
    """A born-digital page as a scanner would give it: pixels only."""
    document = pdfium.PdfDocument(corpus / DOCLING / "sources" / "multi_page.pdf")
    image = document[0].render(scale=150 / 72, grayscale=True).to_pil()
    document.close()
    return image


def _garbage_pdf() -> bytes:
    """Helvetica text whose ToUnicode map sends every letter into the private use area,
    as some subsetting tools leave it."""
    cmap = (
        b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        b"/CMapName /Garbage def /CMapType 2 def\n"
        b"1 begincodespacerange <00> <FF> endcodespacerange\n"
        b"1 beginbfrange <41> <7A> <E041> endbfrange\n"
        b"endcmap CMapName currentdict /CMap defineresource pop end end\n"
    )
    pdf = pikepdf.new()
    font = pikepdf.Dictionary(
        Type=pikepdf.Name.Font,
        Subtype=pikepdf.Name.Type1,
        BaseFont=pikepdf.Name.Helvetica,
        ToUnicode=pdf.make_stream(cmap),
    )
    rows = b"".join(
        b"1 0 0 1 72 %d Tm (Lorem ipsum dolor sit amet) Tj\n" % (700 - 16 * i) for i in range(10)
    )
    content = b"BT /F1 12 Tf\n" + rows + b"ET\n"
    page = pikepdf.Page(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Page,
            MediaBox=[0, 0, 612, 792],
            Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)),
            Contents=pdf.make_stream(content),
        )
    )
    pdf.pages.append(page)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def test_characters_keep_their_own_boxes_on_a_bulleted_page(corpus: Path) -> None:
    # PDFium's page text ran three characters ahead of the boxes on this page's bulleted
    # lines: "Dis" of "Display" went missing and the "F" of "DSPFCNUSG" stood alone.
    document = pdfium.PdfDocument(corpus / DOCLING / "sources" / "redp5110_sampled.pdf")
    try:
        layer = extract(document[7], 200 / 72)
    finally:
        document.close()
    texts = [line.text for line in layer.lines]
    for expected in (
        "Work Function Usage (WRKFCNUSG)",
        "Display Function Usage (DSPFCNUSG)",
        "HBEDOYA to administer and manage RCAC rules:",
    ):
        assert expected in texts
    assert all(len(text) > 1 for text in texts[:12])
