"""Whether a PDF page's text layer can be trusted to stand in for OCR.

A text layer is only as good as what the page shows. It is refused when it is missing,
when more of its characters are drawn invisibly (render mode 3, or under a later image)
than shown (an earlier OCR's layer), when more than ``MAX_UNMAPPED`` of its glyphs have
no usable Unicode (garbage), or when its lines cover less than ``MIN_COVER`` of the
page's print-like ink: so a scan with a stamp or a header drawn as text, or a page of
text in images, goes to OCR, while a page with photos, charts and rules beside its text
stays trusted. ``TextLayer.verdict`` (``document.textlayer``) is the entry point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from dotsocr.document.textlayer import TextLayer
    from dotsocr.text_lines import Box, TextLine

MAX_UNMAPPED = 0.10
"""More unreadable glyphs than this share and the layer is refused: at one glyph in ten,
every other word has one. Sound pages have none, or a few bullets and symbols (1%)."""
MIN_COVER = 0.5
"""The layer must cover at least half the page's print-like ink (see
``_text_ink_covered``): less, and most of the text is in images. Born-digital pages in
the corpus read 0.73 (a poster photo with captions) to 1.0, scans with a stamp or a
header drawn as text well under 0.2."""
INK_CONTRAST = 80  # grey levels between paper and ink, as in ``document.ink``
GRID = 400  # cells on the page's long side
BLOCK = 8  # cells a side: about 5.6 mm, a few letters of body text
DENSE = 0.5
"""A block with more of its cells inked is a picture: print fills 20% to 45% of them
(strokes and the gaps between letters and lines), photos and filled shapes more."""


@dataclass(frozen=True)
class Verdict:
    trusted: bool
    reason: str


def judge(layer: TextLayer, image: Image.Image) -> Verdict:
    """Whether ``layer`` can stand in for OCR of ``image``: see ``TextLayer.verdict``."""
    if layer.unreadable:
        return Verdict(False, f"the text layer could not be read ({layer.unreadable})")
    drawn = layer.chars + layer.unmapped
    if drawn + layer.invisible == 0:
        return Verdict(False, "no text layer")
    if layer.invisible > drawn:
        return Verdict(False, "invisible text layer (an earlier OCR)")
    if layer.unmapped > MAX_UNMAPPED * drawn:
        return Verdict(False, f"garbage text layer ({layer.unmapped / drawn:.0%} unmapped glyphs)")
    if not layer.lines:
        return Verdict(False, "no text layer")
    cover = _text_ink_covered(layer.lines, image)
    if cover < MIN_COVER:
        return Verdict(False, f"text layer covers {cover:.0%} of the page's ink")
    return Verdict(True, "text layer")


def _text_ink_covered(lines: list[TextLine], image: Image.Image) -> float:
    """The share of the page's text-like ink that the lines' boxes cover (1 with none).

    Ink is seen on a grid of ``GRID`` cells on the long side (about 0.7 mm on a letter
    page, at any resolution). Ink outside the lines counts only in blocks of ``BLOCK``
    cells that look like print: not dense (a picture's blocks, and their fringe, fill
    more than ``DENSE``) and not a lone rule (ink in more than two rows and columns).
    """
    ink, factor = _ink_cells(image)
    covered = np.zeros_like(ink)
    for line in lines:
        pad = max(line.size * 0.25, factor)  # the line's box can sit a hair inside its ink
        x1, y1, x2, y2 = (round(v / factor) for v in _grow(line.bbox, pad))
        covered[max(0, y1) : y2 + 1, max(0, x1) : x2 + 1] = True
    text = int((ink & covered).sum())
    loose = int(_in_printlike_blocks(ink, ink & ~covered))
    return text / (text + loose) if text + loose else 1.0


def _grow(box: Box, pad: float) -> Box:
    return (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)


def _ink_cells(image: Image.Image) -> tuple[np.ndarray, int]:
    """Cells holding ink (``INK_CONTRAST`` levels off the paper), and the cell size."""
    grey = image.convert("L")
    factor = max(1, math.ceil(max(grey.size) / GRID))
    sample = grey.resize(
        (max(1, grey.width // 8), max(1, grey.height // 8)), Image.Resampling.NEAREST
    )
    paper = int(np.median(np.asarray(sample)))
    if paper >= 128:
        lut = [255 if level < paper - INK_CONTRAST else 0 for level in range(256)]
    else:  # light print on a dark ground
        lut = [255 if level > paper + INK_CONTRAST else 0 for level in range(256)]
    return np.asarray(grey.point(lut).reduce(factor)) > 0, factor


def _in_printlike_blocks(ink: np.ndarray, loose: np.ndarray) -> int:
    """How many ``loose`` cells lie in blocks that look like print, not a picture or a
    rule."""
    rows, cols = -(-ink.shape[0] // BLOCK), -(-ink.shape[1] // BLOCK)
    shape = (rows, BLOCK, cols, BLOCK)
    fill = _pad(ink, rows * BLOCK, cols * BLOCK).reshape(shape).mean(axis=(1, 3))
    cells = _pad(loose, rows * BLOCK, cols * BLOCK).reshape(shape)
    dense = fill > DENSE
    picture = dense.copy()
    picture[1:] |= dense[:-1]
    picture[:-1] |= dense[1:]
    picture[:, 1:] |= dense[:, :-1]
    picture[:, :-1] |= dense[:, 1:]
    spread = (cells.any(axis=3).sum(axis=1) > 2) & (cells.any(axis=1).sum(axis=2) > 2)
    return int(cells.sum(axis=(1, 3))[~picture & spread].sum())


def _pad(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    padded = np.zeros((height, width), dtype=bool)
    padded[: grid.shape[0], : grid.shape[1]] = grid
    return padded
