"""Running headers and footers found by repetition across a document's pages.

A line that comes back near the top or the bottom of most pages (page numbers and
dates aside) is a running header or footer, wherever its page put it: relabelled as
Page-header or Page-footer, it leaves the Markdown as dots.ocr's own furniture does.
"""

from __future__ import annotations

import re
from collections import Counter

from dotsocr.layout import FURNITURE, Cell, PageResult

BAND = 0.15  # how far from the top or bottom a running line may sit
MAX_WORDS = 15
MIN_SHARE = 0.5  # of the pages, and at least two
_DIGITS = re.compile(r"\d+")

Line = tuple[str, str]
Lines = frozenset[Line]


def _key(cell: Cell, page: PageResult) -> Line | None:
    """(edge, text with numbers masked) for a short text cell near an edge."""
    if cell.category in FURNITURE or not cell.text or not page.height:
        return None
    if len(cell.text.split()) > MAX_WORDS:
        return None
    top, bottom = cell.bbox[1] / page.height, cell.bbox[3] / page.height
    edge = "top" if bottom <= BAND else "bottom" if top >= 1 - BAND else None
    if edge is None:
        return None
    text = " ".join(_DIGITS.sub("#", cell.text.lstrip("#* ").lower()).split())
    return (edge, text) if text else None


def edge_lines(page: PageResult) -> set[Line]:
    """The page's short lines near its top or bottom, as (edge, text with numbers masked)."""
    return {key for cell in page.cells if (key := _key(cell, page)) is not None}


def running(seen: Counter[Line], pages: int) -> Lines:
    """The lines ``seen`` on enough of ``pages`` pages (counted once per page) to be running."""
    if pages < 2:
        return frozenset()
    return frozenset(k for k, n in seen.items() if n >= 2 and n >= MIN_SHARE * pages)


def running_lines(pages: list[PageResult]) -> Lines:
    """The running lines of ``pages``."""
    seen: Counter[Line] = Counter()
    for page in pages:
        seen.update(edge_lines(page))
    return running(seen, len(pages))


def mark_running_furniture(pages: list[PageResult], lines: Lines | None = None) -> int:
    """Relabel repeated edge lines in place (``lines``: found on the whole document
    earlier, for marking some of its pages); return how many cells changed."""
    if lines is None:
        lines = running_lines(pages)
    changed = 0
    for page in pages:
        before = changed
        for position, cell in enumerate(page.cells):
            key = _key(cell, page)
            if key in lines:
                category = "Page-header" if key[0] == "top" else "Page-footer"
                text = cell.text.lstrip("#* ") if cell.text else cell.text
                page.cells[position] = cell.model_copy(update={"category": category, "text": text})
                changed += 1
        if changed > before:
            page.notes.append("running header or footer found by repetition across pages")
    return changed
