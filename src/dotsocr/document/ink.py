"""Whether a page image carries visible marks, or is blank paper.

A page that has ink and comes back with no text is a silent failure; a blank page that
comes back empty is right. ``has_ink`` tells the two apart cheaply enough to run on
every page: under 10 ms for a 1700x2200 page on one core, most of it two passes over
the pixels (to grey, and the threshold).

How: the page in grey, less a thin frame at its edges (a scanner's dark border or lid
shadow is not ink); the paper's level is the median; a pixel is ink when it is
``INK_CONTRAST`` levels darker than the paper (lighter, on a dark page: light text on a
dark ground). The page is then seen as a grid of about ``GRID`` cells on its long side,
a cell marked when any of its pixels is ink. It has ink when ink covers at least
``MIN_INK_SHARE`` of it and some of it is drawn in strokes: at least ``MIN_STROKE_CELLS``
marked cells have a marked cell on both sides, across or down (a stroke three cells,
about 2 mm on a page, long). Letters and rules have such strokes; dust, scanner specks
and noise are dots of one or two cells (a thousand specks on a page make about 18 such
cells by chance). A uniform tint, JPEG noise and the show-through of a printed reverse
stay under the contrast.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

INK_CONTRAST = 80  # grey levels between paper and ink: print is 150+, show-through 20-40
MARGIN = 0.02  # of each side left out: scanner edges, lid shadows, a book's gutter
GRID = 500  # cells on the long side
MIN_INK_SHARE = 0.0001  # of the pixels: a short line of small print is 5 to 10 times this
MIN_STROKE_CELLS = 24  # a few letters: each has 5 to 15 at any size; dust has next to none


def has_ink(image: Image.Image) -> bool:
    """Whether ``image`` shows text, drawings or other marks rather than blank paper."""
    grey = image.convert("L")
    dx, dy = round(grey.width * MARGIN), round(grey.height * MARGIN)
    inside = (dx, dy, grey.width - dx, grey.height - dy)
    factor = max(1, math.ceil(max(grey.size) / GRID))
    size = (max(1, (inside[2] - dx) // factor), max(1, (inside[3] - dy) // factor))
    paper = _median(grey.resize(size, Image.Resampling.NEAREST, box=inside))  # a sample
    if paper >= 128:
        lut = [255 if level < paper - INK_CONTRAST else 0 for level in range(256)]
    else:
        lut = [255 if level > paper + INK_CONTRAST else 0 for level in range(256)]
    # Each cell: 255 x the share of its pixels that are ink.
    cells = grey.point(lut).reduce(factor, box=inside)
    share = np.asarray(cells, dtype=np.float32).mean() / 255
    if share < MIN_INK_SHARE:
        return False
    marked = np.asarray(cells) > 0
    across = marked[:, 1:-1] & marked[:, :-2] & marked[:, 2:]
    down = marked[1:-1] & marked[:-2] & marked[2:]
    return int(across.sum()) + int(down.sum()) >= MIN_STROKE_CELLS


def _median(grey: Image.Image) -> int:
    histogram = grey.histogram()
    half, seen = (grey.width * grey.height) / 2, 0
    for level, count in enumerate(histogram):
        seen += count
        if seen >= half:
            return level
    return 255
