"""The embedded CPU engine on real scans: text, orientation, layout, and dots.ocr's shape."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from rapidfuzz.distance import Levenshtein

from dotsocr.document import DocumentOptions, Page, open_document
from dotsocr.engines import Engine
from dotsocr.engines.cpu import CPUEngine
from dotsocr.engines.tesseract import tesseract_languages
from dotsocr.errors import ConfigError, EngineError
from dotsocr.layout import PageStatus
from dotsocr.models import get_profile

PROFILE = get_profile("dots.ocr")
DATA_PDF = Path(__file__).parent / "data" / "multi_page.pdf"


def cer(found: str, truth: str) -> float:
    """Character error rate with whitespace collapsed."""
    found, truth = " ".join(found.split()), " ".join(truth.split())
    return Levenshtein.distance(found, truth) / len(truth)


def read(page: Page, task: str = "layout_all", box=None, **engine_options):
    async def go():
        prepared = PROFILE.prepare(page.image, page.width, page.height, dpi=page.dpi)
        prepared = dataclasses.replace(prepared, text_layer=page.text_layer)
        async with CPUEngine(**engine_options) as engine:
            assert isinstance(engine, Engine)
            answer = await engine.infer(prepared, PROFILE.build_request(prepared, task, box=box))
        return answer, PROFILE.parse(answer.text, prepared.geometry, task, box=box)

    return asyncio.run(go())


def first_page(path, **options) -> Page:
    with open_document(path, DocumentOptions(pages="1", **options)) as doc:
        page = next(doc.pages())
    assert isinstance(page, Page)
    return page


def text_of(parsed) -> str:
    return " ".join(cell.text or "" for cell in parsed.cells)


PHOTOTEST = "tesseract_test/testing/"


@pytest.mark.parametrize(
    ("name", "turned"),  # turned: degrees counter-clockwise that set the page upright
    [
        ("phototest.tif", 0),
        ("phototest-rotated-L.png", 270),
        ("phototest-rotated-R.png", 90),
        ("phototest-rotated-180.png", 180),
    ],
)
def test_phototest_reads_within_a_low_error_rate_at_any_orientation(corpus, name, turned):
    truth = (corpus / PHOTOTEST / "phototest.txt").read_text()
    answer, parsed = read(first_page(corpus / PHOTOTEST / name))
    assert parsed.status is PageStatus.OK and answer.finish_reason == "stop"
    assert cer(text_of(parsed), truth) < 0.02  # plain Tesseract scores 8-10% on real scans
    assert answer.details["orientation"] == turned  # Tesseract's OSD turned these


@pytest.mark.parametrize(
    ("angle", "turned"),
    [("", 0), ("_rotated_90", 270), ("_rotated_180", 180), ("_rotated_270", 90)],
)
def test_rotated_pdf_pages_are_read_upright(corpus, angle, turned):
    page = first_page(corpus / f"docling/tests/data/ocr/sources/ocr_test{angle}.pdf")
    answer, parsed = read(page, "ocr")
    expected = (
        "Docling bundles PDF document conversion to JSON and Markdown in an easy self "
        "contained package"
    )
    assert cer(text_of(parsed), expected) < 0.05
    assert answer.details["orientation"] == turned


def test_the_answer_says_what_read_the_page():
    page = Page("blank.png", 0, Image.new("RGB", (400, 300), "white"), 400, 300)
    answer, _ = read(page)
    assert re.fullmatch(r"tesseract \d+\.\d+\.\d+\S*", answer.engine)
    assert answer.model == "tesseract"
    details = answer.details
    assert (details["recogniser"], details["languages"], details["orientation"]) == (
        "tesseract lstm", "eng", 0,
    )  # fmt: skip
    assert details["text_layer"] is None  # an image has none
    assert set(details["steps"]) == {"layout", "ocr", "compose"}  # nothing read: no OSD


def test_a_rendered_line_of_text_is_read():
    image = Image.new("RGB", (900, 300), "white")
    ImageDraw.Draw(image).text(
        (60, 100), "TEST OCR 123", fill="black", font=ImageFont.load_default(size=72)
    )
    page = Page("test.png", 0, image, 900, 300)
    _, parsed = read(page)
    assert "TEST OCR 123" in text_of(parsed)


@pytest.mark.parametrize("task", ["layout_all", "ocr"])
def test_a_blank_page_reads_as_nothing_not_an_error(task):
    page = Page("blank.png", 0, Image.new("RGB", (800, 1000), "white"), 800, 1000)
    answer, parsed = read(page, task)
    assert answer.text == ("[]" if task == "layout_all" else "")
    assert parsed.cells == []


def test_headings_and_boxes_on_a_real_pdf_page(data):
    page = first_page(data / "multi_page.pdf")
    _, parsed = read(page)
    headers = [c.text for c in parsed.cells if c.category == "Section-header"]
    assert headers[:2] == [
        "## The Evolution of the Word Processor",
        "## Pre-Digital Era (19th - Early 20th Century)",
    ]
    body = next(c for c in parsed.cells if c.text.startswith("The concept of the word processor"))
    x1, y1, x2, y2 = body.bbox  # in page pixels (A4 at 200 DPI is 1654x2339)
    assert 150 < x1 < 250 and 250 < y1 < 400 and x2 > 1300 and y2 < 500


def test_layout_only_ocr_and_grounding_answers(data):
    page = first_page(data / "multi_page.pdf")
    answer, parsed = read(page, "layout_only")
    assert all(cell.text is None for cell in parsed.cells) and json.loads(answer.text)
    _, parsed = read(page, "ocr")
    assert parsed.cells[0].text.startswith("The Evolution of the Word Processor\n\nThe concept")
    _, parsed = read(page, "grounding", box=(100, 150, 1600, 300))  # the first heading's band
    assert "Evolution of the Word Processor" in text_of(parsed)
    assert "The concept" not in text_of(parsed)


def test_languages_are_discovered_and_missing_ones_named():
    assert "eng" in tesseract_languages()
    with pytest.raises(ConfigError, match=r"no Tesseract data for xyz \(found: .*eng.*\)"):
        CPUEngine("eng+xyz")


@pytest.mark.parametrize("angle", ["_rotated_90", "_rotated_180", "_rotated_270"])
def test_boxes_of_turned_pages_land_on_the_text(corpus, angle):
    import numpy as np

    page = first_page(corpus / f"docling/tests/data/ocr/sources/ocr_test{angle}.pdf")
    _, parsed = read(page)
    ink = np.asarray(page.image.convert("L")) < 128
    x1, y1, x2, y2 = parsed.cells[0].bbox
    assert ink[y1:y2, x1:x2].sum() > 0.9 * ink.sum()


DOCLING = "docling/tests/data/pdf/sources"


def test_a_born_digital_page_is_read_from_its_text_layer_without_ocr(data):
    page = first_page(data / "multi_page.pdf", text_layer=True)
    answer, parsed = read(page)
    assert answer.details["recogniser"] == "text layer" and answer.model == "text layer"
    assert answer.details["text_layer"] == "used"
    assert "ocr" not in answer.details["steps"] and "osd" not in answer.details["steps"]
    headers = [c.text for c in parsed.cells if c.category == "Section-header"]
    assert headers[:2] == [
        "## The Evolution of the Word Processor",
        "## Pre-Digital Era (19th - Early 20th Century)",
    ]
    assert any(c.text.startswith("- IBM MT/ST (Magnetic Tape/Selectric Typewriter)")
               for c in parsed.cells if c.category == "List-item")  # fmt: skip


def test_text_layer_never_ocrs_and_only_refuses_pages_without_one(data, corpus):
    page = first_page(data / "multi_page.pdf", text_layer=True)
    answer, parsed = read(page, text_layer="never")
    assert answer.details["recogniser"] == "tesseract lstm"
    assert answer.details["text_layer"] == "not read (--text-layer never)"
    assert "The Evolution of the Word Processor" in text_of(parsed)
    scan = first_page(corpus / "olmocr/tests/gnarly_pdfs/newspaper.pdf", text_layer=True)
    with pytest.raises(EngineError, match=r"^invisible text layer \(an earlier OCR\): "
                       r"--text-layer only reads no other page"):  # fmt: skip
        read(scan, text_layer="only")
    blank = Page("blank.png", 0, Image.new("RGB", (400, 300), "white"), 400, 300)
    with pytest.raises(EngineError, match="no text layer to read"):
        read(blank, text_layer="only")


def test_an_earlier_ocr_layer_is_read_again_and_a_dense_newspaper_is_not_empty(corpus):
    page = first_page(corpus / "olmocr/tests/gnarly_pdfs/newspaper.pdf", text_layer=True)
    answer, parsed = read(page)
    assert answer.details["text_layer"] == "invisible text layer (an earlier OCR)"
    assert answer.details["recogniser"] == "tesseract lstm"
    assert len(text_of(parsed).split()) > 500


def test_a_table_on_a_born_digital_page_becomes_an_html_table(corpus):
    page = first_page(corpus / DOCLING / "2305.03393v1-pg9.pdf", text_layer=True)
    _, parsed = read(page)
    tables = [c for c in parsed.cells if c.category == "Table"]
    assert len(tables) == 1 and tables[0].text.startswith("<table>")
    assert tables[0].text.count("<tr>") >= 8  # the table's rows, one per line of values


def test_figures_become_pictures_without_text(corpus):
    page = first_page(corpus / DOCLING / "picture_classification.pdf", text_layer=True)
    _, parsed = read(page)
    pictures = [c for c in parsed.cells if c.category == "Picture"]
    assert pictures and all(not c.text for c in pictures)
    assert any(c.category == "Caption" for c in parsed.cells)


def test_a_chinese_page_goes_to_pp_ocr_by_its_script(tmp_path):
    import cjk_pages

    cjk_pages.require_font()
    text = next(iter(sorted(cjk_pages.passages().items())))[1]
    image = cjk_pages.scanned(cjk_pages.render_page(text))
    answer, parsed = read(Page("zh.png", 0, image.convert("RGB"), *image.size, dpi=200))
    assert answer.details["recogniser"] == "PP-OCRv6" and answer.model == "PP-OCRv6"
    found = "".join(text_of(parsed).split())
    assert Levenshtein.distance(found, "".join(text.split())) / len(text) < 0.05


def test_a_missing_opencv_is_one_line_saying_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)  # as when libGL.so.1 is missing
    with pytest.raises(ConfigError, match=r"cannot load OpenCV .*apt-get install libgl1"):
        CPUEngine()


def page_with_a_picture_of_text(tmp_path) -> Page:
    """A born-digital page: lines of real text, and a picture of a paragraph of text."""
    from pdf_support import text_pdf

    drawn = Image.new("RGB", (1300, 400), "white")
    font = ImageFont.load_default(size=36)
    for row in range(6):
        words = "PICTURED WORDS OF A NOTE" if row == 0 else f"scanned line {row} of a note"
        ImageDraw.Draw(drawn).text((20, 20 + 60 * row), words, fill="black", font=font)
    rows = [(72, 720 - 16 * i, f"A line of real text, number {i + 1}.") for i in range(6)]
    path = tmp_path / "picture.pdf"
    path.write_bytes(text_pdf(rows, image=drawn, image_box=(72, 420, 468, 144)))
    return first_page(path, text_layer=True)


def test_a_picture_of_text_on_a_born_digital_page_is_ocred_but_not_with_only(tmp_path):
    page = page_with_a_picture_of_text(tmp_path)
    answer, parsed = read(page)
    assert answer.details["text_layer"] == "used"
    assert answer.details["recogniser"] == "text layer + tesseract lstm"
    assert "A line of real text, number 1." in text_of(parsed)
    assert "PICTURED WORDS" in text_of(parsed)
    answer, parsed = read(page, text_layer="only")
    assert answer.details["recogniser"] == "text layer" and "ocr" not in answer.details["steps"]
    assert "PICTURED WORDS" not in text_of(parsed)


def test_grounding_on_a_born_digital_page_reads_the_words_in_the_box(tmp_path):
    page = page_with_a_picture_of_text(tmp_path)
    scale = page.dpi / 72
    first_line = (60 * scale, (792 - 736) * scale, 560 * scale, (792 - 714) * scale)
    answer, parsed = read(page, "grounding", box=tuple(round(v) for v in first_line))
    assert answer.details["recogniser"] == "text layer"
    assert text_of(parsed) == "A line of real text, number 1."
    picture = (72 * scale, (792 - 564) * scale, 540 * scale, (792 - 420) * scale)
    answer, parsed = read(page, "grounding", box=tuple(round(v) for v in picture))
    assert answer.details["recogniser"] == "tesseract lstm"  # no layer text there: OCR
    assert "PICTURED WORDS" in text_of(parsed)


def test_a_text_layer_that_cannot_be_read_says_so(monkeypatch):
    from dotsocr.document import textlayer

    def broken(page, scale):
        raise ValueError("FPDFText_LoadPage failed")

    monkeypatch.setattr(textlayer, "extract", broken)
    page = first_page(DATA_PDF, text_layer=True)
    answer, parsed = read(page)
    reason = "the text layer could not be read (ValueError: FPDFText_LoadPage failed)"
    assert answer.details["text_layer"] == reason
    assert "The Evolution of the Word Processor" in text_of(parsed)  # OCRed instead
    with pytest.raises(EngineError, match=r"could not be read .*--text-layer only"):
        read(page, text_layer="only")


def test_only_engines_that_read_a_text_layer_get_one_extracted(data):
    options = DocumentOptions(pages="1")
    for wanted in (False, True):
        with open_document(data / "multi_page.pdf", options.within(10**7, wanted)) as doc:
            page = next(doc.pages())
        assert (page.text_layer is not None) is wanted
    assert CPUEngine().reads_text_layer and not CPUEngine(text_layer="never").reads_text_layer
