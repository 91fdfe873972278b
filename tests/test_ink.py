"""Telling a page with marks on it from blank paper, on drawn pages and on real ones."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from dotsocr.document import DocumentOptions, Page, open_document
from dotsocr.document.ink import has_ink

SIZE = (1700, 2200)  # US Letter at 200 DPI
LINE = "The quick brown fox jumps over the lazy dog."
# Pages of the corpus with nothing on them (checked by eye).
BLANK = {
    ("docling/tests/data/pdf/sources/redp5110_sampled.pdf", 16),  # white
    ("olmocr/tests/sample_dataset/empty_document/blanktext.pdf", 0),  # white
    ("olmocr/olmocr/bench/sample_data/pdfs/blank_book_pg1.pdf", 0),  # the reverse shows through
}
INPUTS = {".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"}


def page(colour="white", text: str | None = None, size: int = 33, ink="black") -> Image.Image:
    """A page, with one line of text at ``size`` pixels (33: 12 pt at 200 DPI)."""
    image = Image.new("RGB", SIZE, colour)
    if text:
        font = ImageFont.load_default(size=size)
        ImageDraw.Draw(image).text((200, 1000), text, fill=ink, font=font)
    return image


def specks(count: int, seed: int = 1) -> Image.Image:
    image = page()
    draw, rng = ImageDraw.Draw(image), random.Random(seed)
    for _ in range(count):
        x, y, r = rng.randrange(SIZE[0]), rng.randrange(SIZE[1]), rng.choice([0, 1, 1, 2])
        draw.ellipse((x - r, y - r, x + r, y + r), fill="black")
    return image


def noisy(sigma: float, quality: int | None = None) -> Image.Image:
    rng = np.random.default_rng(0)
    grey = np.clip(235 + rng.normal(0, sigma, SIZE[::-1]), 0, 255).astype(np.uint8)
    image = Image.fromarray(grey).convert("RGB")
    if quality is None:
        return image
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer).convert("RGB")


def edge_band(width: int) -> Image.Image:
    """A scan wider than its paper: a dark band down the right edge."""
    image = page()
    ImageDraw.Draw(image).rectangle((SIZE[0] - width, 0, SIZE[0], SIZE[1]), fill=(20, 20, 20))
    return image


def rule() -> Image.Image:
    image = page()
    ImageDraw.Draw(image).line((200, 1100, 1500, 1100), fill="black", width=3)
    return image


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("white paper", page()),
        ("a few specks of dust", specks(30)),
        ("a very dusty scan", specks(1000)),
        ("grey paper", page((200, 200, 200))),
        ("a faint cream tint", page((250, 245, 225))),
        ("scanner noise", noisy(12)),
        ("scanner noise, saved as a poor JPEG", noisy(12, quality=30)),
        ("heavy noise", noisy(25)),
        ("a scanner's dark edge", edge_band(20)),
    ],
)
def test_blank_pages_have_no_ink(name, image):
    assert not has_ink(image), name


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("a line of 12 pt text", page(text=LINE)),
        ("a short line of 8 pt text", page(text="This page intentionally left blank", size=22)),
        ("a running head", page(text="Page 12")),
        ("grey text", page(text=LINE, ink=(150, 150, 150))),
        ("text on grey paper", page((200, 200, 200), text=LINE)),
        ("light text on a dark page", page((30, 30, 30), text=LINE, ink="white")),
        ("a bilevel scan", page(text=LINE).convert("1")),
        ("a rule across the page", rule()),
    ],
)
def test_pages_with_marks_have_ink(name, image):
    assert has_ink(image), name


def test_a_dark_edge_does_not_hide_the_text_beside_it():
    image = edge_band(20)
    ImageDraw.Draw(image).text(
        (200, 1000), LINE, fill="black", font=ImageFont.load_default(size=33)
    )
    assert has_ink(image)


def test_every_page_of_the_corpus_has_ink_but_its_blank_ones(corpus):
    # 100 DPI keeps it quick; 72 and 200 DPI give the same answers.
    options = DocumentOptions(dpi=100, max_pixels=4_000_000)
    wrong, seen = [], 0
    for path in sorted(corpus.rglob("*")):
        if path.suffix.lower() not in INPUTS or not path.is_file():
            continue
        name = path.relative_to(corpus).as_posix()
        try:
            document = open_document(path, options)
        except Exception:  # encrypted, corrupt, zero bytes: the document tests' business
            continue
        with document:
            for item in document.pages():
                if isinstance(item, Page):
                    seen += 1
                    if has_ink(item.image) == ((name, item.index) in BLANK):
                        wrong.append((name, item.number))
    assert seen > 100 and not wrong


def test_the_blank_book_page_is_blank_at_its_own_resolution(corpus):
    path = corpus / "olmocr/olmocr/bench/sample_data/pdfs/blank_book_pg1.pdf"
    with open_document(path) as document:  # 200 DPI
        (item,) = document.pages()
    assert isinstance(item, Page) and not has_ink(item.image)
