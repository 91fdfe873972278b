"""A page's cells, as dots.ocr gives them, from lines of text and layout regions.

The embedded engine has lines from a PDF's text layer or a recogniser, and sometimes
regions from a layout model. ``compose`` puts each line in the region holding most of
it, turns pictures, tables and formulas into one cell each, gathers the rest into
paragraphs, names what the layout model did not (headings, list items, running heads
and feet, captions) from the lines' own shape, and reads the cells in order.

Lines no region holds are common (the layout model misses things, and some tasks run
none), so paragraphs come from the lines alone: a source's own paragraph number where
it gives one (Tesseract), else lines stacked close under one another in one column.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

from dotsocr.engines import tables
from dotsocr.engines.paragraphs import (
    BULLET,
    SAME_ROW,
    Row,
    box_height,
    overlap,
    paragraphs,
    rows,
)
from dotsocr.engines.reading_order import reading_order
from dotsocr.layout import FURNITURE, box_area
from dotsocr.text_lines import Box, Region, TextLine, ideographic, intersection, union_box

REGION_SHARE = 0.5
# A "picture" holding this many words in lines of at least PROSE_LINE_WORDS is text.
PROSE_WORDS = 40
PROSE_LINE_WORDS = 4
"""A region holds a line when it covers at least this share of the line's area."""
HEADING_RATIO = 1.15
"""Letters this much taller than the body's mark a heading."""
SMALLER = 0.9
"""Letters this much smaller than the body's mark a note, a reference, a credit: no heading."""
TITLE_RATIO = 1.4
"""And this much taller, in the page's largest letters, near its top: its title."""
FOLLOWING_TEXT = 3
"""A plain heading is followed, under it, by a paragraph this many times its length."""
MAX_HEADING_WORDS = 12
MAX_HEADING_ROWS = 3
MAX_TITLE_WORDS = 25
SENTENCE_END = ".,;:!?"
EDGE_BAND = 0.09
"""The top and bottom 9% of a page hold its running heads and feet."""
NUMBER_BAND = 0.15
"""A page number this near the top or bottom is furniture, and so is the text beside it."""
MAX_FURNITURE_ROWS = 3
MAX_FURNITURE_WORDS = 40

_NUMBERED = re.compile(r"^(\(?[0-9a-zA-Z]{1,3}[.)]|[ivx]+\.)\s")
# "7", "- 7 -", "Page 7 of 9", "7/9", "iv" (lower case only: "CIVIL" is a word)
_PAGE_NUMBER = re.compile(
    r"^(?i:page\s+)?([0-9]{1,4}|[ivxlc]{1,6})(\s*(?i:/|of)\s*[0-9]{1,4})?$|^[-–—]\s*[0-9]{1,4}\s*[-–—]$"
)
_CAPTION = re.compile(
    r"^(fig(ure)?\.?|table|tab\.|chart|scheme)\s*[0-9IVX]+[a-z]?\s*[.:|—–-]", re.I
)
_DECORATION = re.compile(r"^[\s.·…_\-–—=~*•]+$")  # leaders, rules, dinkuses: drawn, not read
_HYPHENS = "-\u00ad\u2010"
_NUMBERED_AT_AN_END = re.compile(r"^\d{1,4}\s|\s\d{1,4}$")
CAPITALS_SHARE = 0.6
_SPLIT_REGIONS = frozenset({"Text", "List-item"})


@dataclass
class Block:
    """One cell of the page: its box, dots.ocr's category and its text (None: a picture)."""

    bbox: Box
    category: str
    text: str | None
    confidence: float | None = None  # the lines' mean, where the source gave one


@dataclass
class _Draft:
    """A cell before its category and text are settled."""

    bbox: Box
    rows: list[Row] = field(default_factory=list)
    category: str | None = None  # from a region, or None for the heuristics to decide
    text: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.text = _join([row.text for row in self.rows])

    @property
    def lines(self) -> list[TextLine]:
        return [line for row in self.rows for line in row.lines]

    @property
    def size(self) -> float:
        sizes = [row.size for row in self.rows if row.size > 0]
        return statistics.median(sizes) if sizes else 0.0

    @property
    def bold(self) -> bool:
        return bool(self.rows) and all(row.bold for row in self.rows)


def compose(lines: list[TextLine], regions: list[Region], width: int, height: int) -> list[Block]:
    """The page's cells in reading order, in dots.ocr's categories.

    Args:
        lines: the page's lines, in the image's pixels.
        regions: a layout model's regions in the same pixels; may be empty.
        width, height: the image's size.

    Returns:
        Blocks in reading order: running heads first, running feet last. Tables carry
        HTML where ``tables.table_html`` finds a grid, pictures carry no text, titles
        and section headers carry Markdown's ``# `` and ``## ``, list items ``- ``.
    """
    lines = [line for line in lines if line.text.strip()]
    pools = _assign(lines, regions)
    freed = _free_prose_in_pictures(regions, pools)
    drafts: list[_Draft] = []
    for index, region in enumerate(regions):
        if index not in freed:
            drafts += _region_drafts(region, pools.get(index, []))
    drafts += [_Draft(_rows_box(p), p) for p in paragraphs(pools.get(None, []))]
    drafts = [d for d in drafts if d.category or not _DECORATION.match(d.text)]
    body_size, body_bold = _body(lines)
    for draft in drafts:  # the layout model takes a title near the top for a page header
        if draft.category in FURNITURE and _heading_like(draft, body_size, body_bold):
            draft.category = None
    _mark_furniture([d for d in drafts if d.category is None], body_size, height)
    furniture = ("Page-header", "Page-footer")
    heads = _ordered([d for d in drafts if d.category == "Page-header"], width, height)
    feet = _ordered([d for d in drafts if d.category == "Page-footer"], width, height)
    body = _ordered([d for d in drafts if d.category not in furniture], width, height)
    _label(body, body_size, body_bold)
    _find_title(body, body_size, height)
    return [_block(draft) for draft in heads + body + feet]


def _assign(lines: list[TextLine], regions: list[Region]) -> dict[int | None, list[TextLine]]:
    """Lines by the index of the region holding most of each (None: no region does)."""
    pools: dict[int | None, list[TextLine]] = {}
    for line in lines:
        least = REGION_SHARE * max(box_area(line.bbox), 1e-6)
        # most of the line wins; between equals, the smaller (more specific) region
        held = [
            (covered, -box_area(region.bbox), index)
            for index, region in enumerate(regions)
            if (covered := box_area(intersection(line.bbox, region.bbox))) >= least
        ]
        pools.setdefault(max(held)[2] if held else None, []).append(line)
    return pools


def _free_prose_in_pictures(
    regions: list[Region], pools: dict[int | None, list[TextLine]]
) -> set[int]:
    """The "pictures" that hold prose, their lines moved to the free lines in place: a
    dense scan (a newspaper page) can come back from the layout model as one big figure,
    and a page with visible text must not come back empty. A chart's labels are short."""
    freed = set()
    for index, region in enumerate(regions):
        held = pools.get(index, [])
        prose = sum(n for line in held if (n := len(line.text.split())) >= PROSE_LINE_WORDS)
        if region.category == "Picture" and prose >= PROSE_WORDS:
            pools.setdefault(None, []).extend(pools.pop(index))
            freed.add(index)
    return freed


def _prose(rows: list[Row]) -> bool:
    """Too much text for a heading: more rows or words than any heading has."""
    words = sum(len(row.text.split()) for row in rows)
    return len(rows) > MAX_HEADING_ROWS or words > 2 * MAX_HEADING_WORDS


def _region_drafts(region: Region, lines: list[TextLine]) -> list[_Draft]:
    """A picture, or its lines as one cell, or (text, lists) as paragraphs."""
    if region.category == "Picture":
        return [_Draft(region.bbox, category="Picture")]
    if not lines:
        return []
    held = rows(lines)
    if region.category == "Section-header" and _prose(held):
        region = Region(region.bbox, "Text", region.score)  # a layout model's misreading
    if region.category not in _SPLIT_REGIONS:
        return [_Draft(region.bbox, held, region.category)]
    found = paragraphs(lines)
    drafts = []
    for paragraph in found:
        box = region.bbox if len(found) == 1 else _rows_box(paragraph)
        draft = _Draft(box, paragraph, region.category)
        if BULLET.match(draft.text):
            draft.category = "List-item"
        drafts.append(draft)
    return drafts


# Categories


def _body(lines: list[TextLine]) -> tuple[float, bool]:
    """The body text's letter height (the median over characters: headings are few and
    short), and whether it is bold (then bold marks no heading)."""
    size = _weighted_median([(line.size, len(line.text)) for line in lines if line.size > 0])
    bold = sum(len(line.text) for line in lines if line.bold)
    return size, bold * 2 > sum(len(line.text) for line in lines)


def _weighted_median(pairs: list[tuple[float, int]]) -> float:
    total, seen = sum(weight for _, weight in pairs), 0
    for value, weight in sorted(pairs):
        seen += weight
        if seen * 2 >= total:
            return value
    return 0.0


def _mark_furniture(drafts: list[_Draft], body_size: float, height: int) -> None:
    """Name running heads and feet: short text in the edge bands, and page numbers a
    little further in (wide margins) with the text on their row."""
    for draft in drafts:
        draft.category = _furniture(draft, body_size, height)
    for draft in drafts:
        edge = _edge(draft, height, NUMBER_BAND)
        if edge and not draft.category and _running_head(draft):
            draft.category = edge
    for number in drafts:
        edge = _edge(number, height, NUMBER_BAND)
        if number.category or not edge or not _PAGE_NUMBER.match(number.text):
            continue
        for draft in drafts:
            h = min(box_height(draft.bbox), box_height(number.bbox))
            beside = overlap(draft.bbox, number.bbox, 1) >= SAME_ROW * h
            if not draft.category and (draft is number or (beside and _short(draft))):
                draft.category = edge


def _running_head(draft: _Draft) -> bool:
    """A book's running head or foot: one short row with a page number at one end and
    its words mostly in capitals ("400 BRITISH HUSBANDRY. [Ch. XIX.")."""
    if len(draft.rows) != 1 or len(draft.text.split()) > MAX_HEADING_WORDS:
        return False
    letters = [ch for ch in draft.text if ch.isalpha()]
    capitals = sum(ch.isupper() for ch in letters) >= CAPITALS_SHARE * len(letters)
    return bool(letters) and capitals and bool(_NUMBERED_AT_AN_END.search(draft.text))


def _furniture(draft: _Draft, body_size: float, height: int) -> str | None:
    """Page-header or Page-footer for short text in the edge bands that is not larger than
    the body's (a title near the top is not furniture); else None."""
    edge = _edge(draft, height, EDGE_BAND)
    if not edge or not _short(draft):
        return None
    return None if _larger(draft, body_size) else edge


def _heading_like(draft: _Draft, body_size: float, body_bold: bool) -> bool:
    """Larger than the body, or words in bold where the body is not, and not a page
    number."""
    words = len(draft.text.split()) > 1 and any(ch.isalpha() for ch in draft.text)
    return _larger(draft, body_size) or (draft.bold and not body_bold and words)


def _larger(draft: _Draft, body_size: float) -> bool:
    """Whether the draft's letters are a heading's, larger than the body's (a page number
    in large type is still a page number)."""
    larger = body_size > 0 and draft.size >= HEADING_RATIO * body_size
    return larger and not _PAGE_NUMBER.match(draft.text)


def _edge(draft: _Draft, height: int, band: float) -> str | None:
    if draft.bbox[3] <= height * band:
        return "Page-header"
    return "Page-footer" if draft.bbox[1] >= height * (1 - band) else None


def _short(draft: _Draft) -> bool:
    rows, words = len(draft.rows), len(draft.text.split())
    return rows <= MAX_FURNITURE_ROWS and words <= MAX_FURNITURE_WORDS


def _label(body: list[_Draft], body_size: float, body_bold: bool) -> None:
    """Name the cells no region named, in reading order (a heading needs what follows)."""
    for position, draft in enumerate(body):
        if draft.category is not None:
            continue
        after = body[position + 1] if position + 1 < len(body) else None
        if BULLET.match(draft.text):
            draft.category = "List-item"
        elif _CAPTION.match(draft.text):
            draft.category = "Caption"
        elif _heading(draft, after, body_size, body_bold):
            draft.category = "Section-header"
        else:
            draft.category = "Text"


def _heading(draft: _Draft, after: _Draft | None, body_size: float, body_bold: bool) -> bool:
    """A short line, not a sentence, that is bold or larger than the body, or (today's
    rule, for sources that know no weight) one line, not smaller than the body's and
    not ending in punctuation, followed by longer text."""
    text, words = draft.text, draft.text.split()
    if sum(char.isalpha() for char in text) < 2:  # "#", "0.92", "(3)": cells, not headings
        return False
    larger = body_size > 0 and draft.size >= HEADING_RATIO * body_size
    most_rows = 3 if body_size > 0 and draft.size >= TITLE_RATIO * body_size else 2
    if len(draft.rows) > most_rows or len(words) > MAX_HEADING_WORDS or text[0].islower():
        return False
    if larger or (draft.bold and not body_bold):
        return text[-1] not in ".,;"  # a heading may ask a question
    smaller = body_size > 0 and draft.size < SMALLER * body_size
    if len(draft.rows) > 1 or text[-1] in SENTENCE_END or smaller or after is None:
        return False
    under = after.bbox[1] >= draft.bbox[3] and overlap(after.bbox, draft.bbox, 0) > 0
    prose = len(after.text) >= FOLLOWING_TEXT * len(text)
    return after.category in (None, "Text") and under and prose


def _find_title(body: list[_Draft], body_size: float, height: int) -> None:
    """The page's title: its first heading in the page's largest letters, well above the
    body's, among its first two cells or in its top half (an article starting mid-page)."""
    texts = [d for d in body if d.category != "Picture" and d.rows]
    if not texts or body_size <= 0 or any(d.category == "Title" for d in body):
        return
    largest = max(d.size for d in texts)
    for position, draft in enumerate(body):
        if (
            draft.category == "Section-header"
            and (position <= 1 or draft.bbox[1] < height / 2)
            and len(draft.text.split()) <= MAX_TITLE_WORDS
            and draft.size >= TITLE_RATIO * body_size
            and draft.size >= 0.95 * largest
        ):
            draft.category = "Title"
            return


# Text and order


def _block(draft: _Draft) -> Block:
    category = draft.category or "Text"
    confidences = [line.confidence for line in draft.lines if line.confidence is not None]
    confidence = sum(confidences) / len(confidences) if confidences else None
    return Block(draft.bbox, category, _text(draft, category), confidence)


def _text(draft: _Draft, category: str) -> str | None:
    """The cell's text as dots.ocr writes it for its category."""
    if category == "Picture":
        return None
    if category == "Table":
        return tables.table_html(draft.lines) or _plain_table(draft.lines)
    if category == "Title":
        return f"# {draft.text}"
    if category == "Section-header":
        return f"## {draft.text}"
    if category == "List-item":
        if BULLET.match(draft.text):
            return BULLET.sub("- ", draft.text, count=1)
        return draft.text if _NUMBERED.match(draft.text) else f"- {draft.text}"
    return draft.text


def _plain_table(lines: list[TextLine]) -> str:
    """A table with no grid found as text: its rows top to bottom, cells left to right."""
    rows: list[list[TextLine]] = []
    for line in sorted(lines, key=lambda line: line.bbox[1]):
        if rows and overlap(rows[-1][0].bbox, line.bbox, 1) >= SAME_ROW * box_height(line.bbox):
            rows[-1].append(line)
        else:
            rows.append([line])
    ordered = (sorted(row, key=lambda line: line.bbox[0]) for row in rows)
    return "\n".join(" ".join(line.text.strip() for line in row) for row in ordered)


def _join(rows: list[str]) -> str:
    """Rows of a paragraph as one string: a space between them, none where a word was
    broken across them at a hyphen or where the script uses no spaces."""
    text = ""
    for row in rows:
        if not row:
            continue
        if not text:
            text = row
        elif text[-1] in _HYPHENS and len(text) > 1 and text[-2].isalnum():
            # "infor-" "mation" is one word; "COVID-" "19" and "Marie-" "Curie" keep theirs
            text = text[:-1] + row if text[-2].islower() and row[0].islower() else text + row
        elif ideographic(text[-1]) or ideographic(row[0]):
            text += row
        else:
            text += " " + row
    return text


def _ordered(drafts: list[_Draft], width: int, height: int) -> list[_Draft]:
    order = reading_order([d.bbox for d in drafts], width, height)
    return [drafts[i] for i in order]


# Geometry


def _rows_box(rows: list[Row]) -> Box:
    return union_box([row.bbox for row in rows])
