"""Lines of text gathered into rows and paragraphs.

Pieces of text at about one height, close after one another, are one row: a line drawn
in pieces (a bullet drawn on its own goes with its item, a little further off). Lines no
region holds are common (the layout model misses things, and some tasks run none), so
paragraphs come from the lines alone: a source's own paragraph number where it gives one
(Tesseract), else rows stacked close under one another in one column, each the other's
only neighbour there, alike in weight and in letter height, line height or letter width.
Such a chain of rows is cut where a paragraph or list item starts: a gap wider than the
usual, a bullet, or, after a sentence's end, an indented or a short line.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from functools import cached_property

from dotsocr.text_lines import Box, TextLine, union_box

SAME_ROW = 0.5
"""Two pieces of text are on one row when they overlap by this share of the taller one."""
ROW_GAP = 0.6
"""Pieces of a row this close (in line heights) are one line; a gutter is wider."""
BULLET_GAP = 3.0
"""A bullet this far (in its item's line heights) left of a line is that line's."""
JOIN_GAP = 0.9
"""A line this close (in the taller line's heights) under another, in its column, may
continue its paragraph; lines in a paragraph are about 0.2 apart, paragraphs 0.7 or more."""
NEAR = 2.0
"""How far below a line (in line heights) to look for the lines that continue it."""
SIZE_RATIO = 1.3
"""Lines whose letters differ in height by more than this are not one paragraph."""
PITCH_RATIO = 1.15
MIN_PITCH_CHARS = 12
NO_DESCENDERS = 1.5
"""Or whose letters (over lines this long, not in capitals) differ in width by more than
this, where their boxes differ in height by less than a line with no descenders can."""
PARAGRAPH_GAP = 0.4
"""A gap this much (in line heights) wider than a paragraph's usual one starts a new one."""
SHORT_LINE = 0.3
"""A line ending a sentence this much (share of the paragraph's width) short ends it."""

# A bullet glyph as recognisers read it ("•" often comes out as e, ¢ or «), then a capital.
BULLET = re.compile(r"^[•·▪◦●○∙*\-–eo¢«©»]\s+(?=[A-Z0-9])")
_LONE_BULLET = re.compile(r"^[•·▪◦●○∙‣⁃]$")


@dataclass
class Row:
    """Pieces of text on one row of one column, left to right."""

    lines: list[TextLine]  # complete once the row is read: the properties are cached

    @cached_property
    def bbox(self) -> Box:
        return union_box([line.bbox for line in self.lines])

    @property
    def height(self) -> float:
        return box_height(self.bbox)

    @cached_property
    def size(self) -> float:
        return statistics.median(line.size for line in self.lines)

    @cached_property
    def bold(self) -> bool:
        return all(line.bold for line in self.lines)

    @cached_property
    def text(self) -> str:
        return " ".join(" ".join(line.text.split()) for line in self.lines)


def paragraphs(lines: list[TextLine]) -> list[list[Row]]:
    """Lines gathered into paragraphs, each a list of rows top to bottom."""
    by_block: dict[int, list[TextLine]] = {}
    loose: list[TextLine] = []
    for line in lines:
        if line.block is None:
            loose.append(line)
        else:
            by_block.setdefault(line.block, []).append(line)
    chains = [rows(group) for group in by_block.values()]
    chains += _chains(rows(loose))
    return [paragraph for chain in chains for paragraph in _split(chain)]


def rows(lines: list[TextLine]) -> list[Row]:
    """Lines that continue one another on one row (a line drawn in pieces) joined."""
    rows: list[Row] = []
    for band in _bands(lines):
        found: list[Row] = []
        for line in sorted(band, key=lambda line: line.bbox[0]):
            row = next((row for row in found if _beside(row.lines[-1], line)), None)
            if row is None:
                found.append(Row([line]))
            else:
                row.lines.append(line)
        rows += found
    return _sorted_rows(rows)


def _bands(lines: list[TextLine]) -> list[list[TextLine]]:
    """Lines at about one height (overlapping the first of them by half the lower one's
    height), top down: the only ones that may be pieces of one row. Keeps ``rows`` from
    comparing all pairs."""
    bands: list[list[TextLine]] = []
    for line in sorted(lines, key=lambda line: line.bbox[1] + line.bbox[3]):
        first = bands[-1][0].bbox if bands else None
        h = min(box_height(first), box_height(line.bbox)) if first else 0.0
        if first and overlap(first, line.bbox, 1) >= SAME_ROW * h:
            bands[-1].append(line)
        else:
            bands.append([line])
    return bands


def _beside(before: TextLine, after: TextLine) -> bool:
    """Whether ``after`` goes on the row ``before`` ends: at its height and close after it.
    A bullet drawn on its own (a PDF's "•") is smaller, and further from its item."""
    left, right = before.bbox, after.bbox
    gap = right[0] - left[2]
    if _LONE_BULLET.match(before.text):
        h = min(box_height(left), box_height(right))
        reach = BULLET_GAP * box_height(right)
        return overlap(left, right, 1) >= SAME_ROW * h and 0 <= gap <= reach
    h = max(box_height(left), box_height(right))  # the taller: a drop capital's line holds others
    return overlap(left, right, 1) >= SAME_ROW * h and -ROW_GAP * h <= gap <= ROW_GAP * h


def _sorted_rows(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda row: (row.bbox[1], row.bbox[0]))


def _chains(rows: list[Row]) -> list[list[Row]]:
    """Rows linked to the one under them in their column, where each is the other's only
    neighbour there: a line spanning two columns continues neither."""
    rows = _sorted_rows(rows)
    below, above = _near(rows)
    following: dict[int, int] = {}
    for i in range(len(rows)):
        under = _nearest(rows, below[i], down=True)
        if under is None or _nearest(rows, above[under], down=False) != i:
            continue
        if _continues(rows[i], rows[under]):
            following[i] = under
    starts = set(range(len(rows))) - set(following.values())
    chains = []
    for start in sorted(starts):
        chain, at = [rows[start]], start
        while at in following:
            at = following[at]
            chain.append(rows[at])
        chains.append(chain)
    return chains


def _near(rows: list[Row]) -> tuple[list[list[int]], list[list[int]]]:
    """For each row (sorted top down), the rows a little below and above it that share
    some of its width."""
    below: list[list[int]] = [[] for _ in rows]
    above: list[list[int]] = [[] for _ in rows]
    tallest = max((row.height for row in rows), default=0.0)
    for i, row in enumerate(rows):
        for j in range(i + 1, len(rows)):
            other = rows[j]
            if other.bbox[1] - row.bbox[3] > NEAR * tallest:
                break
            reach = NEAR * max(row.height, other.height)
            lower = other.bbox[1] > row.bbox[1]
            if (
                lower
                and other.bbox[1] - row.bbox[3] <= reach
                and overlap(row.bbox, other.bbox, 0) > 0
            ):
                below[i].append(j)
                above[j].append(i)
    return below, above


def _nearest(rows: list[Row], near: list[int], down: bool) -> int | None:
    """The nearest of the rows ``near`` one, unless they are not all in its column (then
    the one they are near spans columns, and continues none)."""
    if not near:
        return None
    nearest = min(near, key=lambda j: rows[j].bbox[1] if down else -rows[j].bbox[3])
    if any(overlap(rows[j].bbox, rows[nearest].bbox, 0) <= 0 for j in near):
        return None
    return nearest


def _continues(upper: Row, lower: Row) -> bool:
    """Whether ``lower`` may continue ``upper``'s paragraph: close, alike in weight, and
    alike in letter height, line height or letter width (any: a line with no capitals
    or ascenders reads a smaller letter height, one with no descenders a lower box)."""
    gap = lower.bbox[1] - upper.bbox[3]
    # the taller line's height: a line with no descenders has a short box
    if gap > JOIN_GAP * max(upper.height, lower.height):
        return False
    # a bold heading ends short of the column; a bold lead-in runs on into the next line
    run_on = upper.bbox[2] >= lower.bbox[2] - SHORT_LINE * (lower.bbox[2] - lower.bbox[0])
    if upper.bold != lower.bold and not (upper.bold and run_on):
        return False
    heights = upper.height, lower.height
    if _alike(*heights) or _alike(upper.size, lower.size):
        return True
    texts = (len(upper.text), len(lower.text))
    capitals = any(_capitals(row.text) for row in (upper, lower))  # wide letters
    if min(texts) < MIN_PITCH_CHARS or capitals or not _alike(*heights, ratio=NO_DESCENDERS):
        return False
    wide = (upper.bbox[2] - upper.bbox[0]) / texts[0], (lower.bbox[2] - lower.bbox[0]) / texts[1]
    return max(wide) <= PITCH_RATIO * min(wide)


def _alike(a: float, b: float, ratio: float = SIZE_RATIO) -> bool:
    return min(a, b) > 0 and max(a, b) <= ratio * min(a, b)


def _capitals(text: str) -> bool:
    letters = [char for char in text if char.isalpha()]
    return sum(char.isupper() for char in letters) * 2 > len(letters)


def _split(rows: list[Row]) -> list[list[Row]]:
    """A chain of rows cut where a paragraph or list item starts."""
    if len(rows) < 2:
        return [rows]
    gaps = [rows[k].bbox[1] - rows[k - 1].bbox[3] for k in range(1, len(rows))]
    # the usual gap between a paragraph's lines; too few lines say nothing of it
    usual = statistics.median(gaps) if len(gaps) >= 3 else float("inf")
    left = min(row.bbox[0] for row in rows)
    right = max(row.bbox[2] for row in rows)
    paragraphs = [[rows[0]]]
    for k in range(1, len(rows)):
        previous, row = rows[k - 1], rows[k]
        h = min(previous.height, row.height)
        listing = BULLET.match(paragraphs[-1][0].text) is not None
        ended = previous.text[-1:] in ".!?:。！？" and not listing
        if (
            gaps[k - 1] > usual + PARAGRAPH_GAP * h
            or BULLET.match(row.text)
            or (ended and row.bbox[0] - left > 0.8 * h)  # an indented first line
            or (ended and right - previous.bbox[2] > SHORT_LINE * (right - left))
        ):
            paragraphs.append([row])
        else:
            paragraphs[-1].append(row)
    return paragraphs


# Geometry, shared with compose


def box_height(box: Box) -> float:
    return max(box[3] - box[1], 1.0)


def overlap(a: Box, b: Box, axis: int) -> float:
    """How far ``a`` and ``b`` overlap along ``axis`` (0: x, 1: y); negative when apart."""
    return min(a[axis + 2], b[axis + 2]) - max(a[axis], b[axis])
