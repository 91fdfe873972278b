"""Lines of text with boxes, and layout regions: what the embedded engine's parts share.

A PDF's own text layer (``document.textlayer``), the recognisers (Tesseract, PP-OCR) and
the layout model all speak these types, so the engine can mix them on one page. Boxes
are ``(x1, y1, x2, y2)`` in the pixels of the image being read, origin top left.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

Box = tuple[float, float, float, float]
Span = tuple[float, float]


def ideographic(char: str, hangul: bool = False) -> bool:
    """A Chinese or Japanese character or full-width punctuation: written without spaces
    between words (Korean, ``hangul``, spaces its words, but PP-OCR boxes its letters
    one by one all the same)."""
    prefixes = ("CJK", "HIRAGANA", "KATAKANA", "FULLWIDTH", "IDEOGRAPHIC")
    return unicodedata.name(char, "").startswith((*prefixes, "HANGUL") if hangul else prefixes)


def union_box(boxes: Iterable[Box]) -> Box:
    """The smallest box holding all of ``boxes`` (at least one)."""
    x1, y1, x2, y2 = zip(*boxes, strict=True)
    return (min(x1), min(y1), max(x2), max(y2))


def intersection(a: Box, b: Box) -> Box:
    """Where two boxes overlap (an empty box, of no area, where they do not)."""
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def span_distance(point: float, span: Span) -> float:
    """How far ``point`` lies outside ``span`` (0 inside it)."""
    return max(span[0] - point, point - span[1], 0.0)


def scale_box(box: Box, factor: float) -> Box:
    return (box[0] * factor, box[1] * factor, box[2] * factor, box[3] * factor)


def shift_box(box: Box, dx: float, dy: float) -> Box:
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


@dataclass
class Word:
    bbox: Box
    text: str


@dataclass
class TextLine:
    """One line of text as its source saw it."""

    bbox: Box
    text: str
    size: float  # the letters' height in pixels: a font-size proxy for headings
    words: list[Word] = field(default_factory=list)
    confidence: float | None = None  # 0..1 where a recogniser says; None for a text layer
    bold: bool = False
    block: int | None = None  # the source's own paragraph number, where it groups lines

    def scaled(self, factor: float) -> TextLine:
        return replace(
            self,
            bbox=scale_box(self.bbox, factor),
            size=self.size * factor,
            words=[Word(scale_box(w.bbox, factor), w.text) for w in self.words],
        )

    def shifted(self, dx: float, dy: float) -> TextLine:
        """The line moved by (dx, dy): from a crop's pixels to the page's, or back."""
        return replace(
            self,
            bbox=shift_box(self.bbox, dx, dy),
            words=[Word(shift_box(w.bbox, dx, dy), w.text) for w in self.words],
        )


@dataclass
class Region:
    """A layout model's region, with its class already named as dots.ocr's category."""

    bbox: Box
    category: str  # Text, Title, Section-header, Table, Formula, Picture, Caption, ...
    score: float
