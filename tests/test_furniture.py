"""Running headers and footers found by repetition, end to end with the CPU engine."""

from __future__ import annotations

import json
import subprocess
import sys

from PIL import Image, ImageDraw, ImageFont

from dotsocr.furniture import mark_running_furniture
from dotsocr.layout import Cell, PageResult


def page(index: int, *cells: tuple[tuple[int, int, int, int], str]) -> PageResult:
    return PageResult(
        index=index,
        width=1000,
        height=1000,
        cells=[Cell(bbox=box, category="Text", text=text) for box, text in cells],
    )


def test_repeated_edge_lines_become_furniture_and_numbers_do_not_matter():
    pages = [
        page(
            i,
            ((50, 110, 600, 130), "ACME Annual Report"),
            ((50, 300, 900, 600), f"Body {i}"),
            ((450, 900, 550, 920), f"Page {i + 1} of 3"),
        )
        for i in range(3)
    ]
    assert mark_running_furniture(pages) == 6
    assert [c.category for c in pages[1].cells] == ["Page-header", "Text", "Page-footer"]
    assert "found by repetition" in pages[0].notes[0]


def test_lines_seen_once_or_mid_page_stay_text():
    pages = [
        page(0, ((50, 110, 600, 130), "Introduction"), ((50, 500, 600, 520), "Same line")),
        page(1, ((50, 110, 600, 130), "Methods"), ((50, 500, 600, 520), "Same line")),
    ]
    assert mark_running_furniture(pages) == 0
    assert mark_running_furniture(pages[:1]) == 0


def test_the_ocr_command_leaves_a_running_header_out_of_markdown(tmp_path):
    font = ImageFont.load_default(size=34)
    images = []
    for body in ["Alpha beta gamma delta.", "Epsilon zeta eta theta."]:
        image = Image.new("RGB", (1700, 2200), "white")
        draw = ImageDraw.Draw(image)
        draw.text((150, 240), "Northwind Quarterly Review", fill="black", font=font)  # 11%
        for line in range(12):
            draw.text(
                (150, 600 + 60 * line),
                f"{body} Line {line} of the body text.",
                fill="black",
                font=font,
            )
        images.append(image)
    pdf = tmp_path / "review.pdf"
    images[0].save(pdf, save_all=True, append_images=images[1:], resolution=200)
    result = subprocess.run(
        [sys.executable, "-m", "dotsocr", "ocr", pdf, "-o", tmp_path / "out", "--engine", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    markdown = (tmp_path / "out/review.md").read_text()
    assert "Northwind" not in markdown and "Alpha beta gamma" in markdown
    doc = json.loads((tmp_path / "out/review.json").read_text())
    headers = [c for p in doc["pages"] for c in p["cells"] if c["category"] == "Page-header"]
    assert len(headers) == 2 and all("Northwind Quarterly Review" in c["text"] for c in headers)
