"""Rebuild a table's grid from the words a recogniser found inside a table region.

Rows are words whose vertical centres agree. Columns are the x ranges that the rows'
text covers again and again: a gap between columns is a stretch of x that (almost) no
row writes into. A cell that spans columns (a group header, a title row) covers a gap
in one row only, so it leaves the gap standing and gets a ``colspan``.
"""

from __future__ import annotations

import html
import itertools
import statistics
from dataclasses import dataclass

from dotsocr.text_lines import TextLine, Word, span_distance

ROW_TOLERANCE = 0.5
"""Words whose centres differ by less than this share of the text height share a row."""

WORD_GAP = 0.8
"""A gap wider than this share of the text height ends one cell's run of words."""

SPANNING_SHARE = 0.1
"""Rows that may write across a column gap before it stops being one."""

BESIDE_RATIO = 3
"""A stretch of x is still a gap where rows with text on both sides of it (and not
across it) outnumber the rows writing across it this many times."""

RULINGS = " |[]_"
"""What a recogniser makes of a table's ruling lines: no cell's text."""

MIN_GRID_ROWS = 0.3
"""The share of rows that must fill two cells or more for the text to be a grid."""


@dataclass
class _Run:
    """Words of one row close enough together to belong to one cell."""

    x1: float
    x2: float
    words: list[Word]

    @property
    def top(self) -> float:
        return min(w.bbox[1] for w in self.words)

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


@dataclass
class _Cell:
    first: int  # the first column it covers
    last: int
    text: str


def table_html(lines: list[TextLine]) -> str | None:
    """The lines of one table region as ``<table><tr><td>..</td></tr></table>``.

    Returns None where no grid can be recovered (one column, or too irregular), so the
    caller keeps the plain text.
    """
    words = [w for w in _words(lines) if w.text.strip(RULINGS)]
    if len(words) < 4:
        return None
    height = statistics.median(w.bbox[3] - w.bbox[1] for w in words)
    rows = _join_wrapped(
        [_runs(row, WORD_GAP * height) for row in _rows(words, ROW_TOLERANCE * height)]
    )
    columns = _columns(rows, WORD_GAP * height)
    if len(columns) < 2 or len(rows) < 2:
        return None
    grid = [_cells(row, columns) for row in rows]
    if sum(len(cells) >= 2 for cells in grid) < MIN_GRID_ROWS * len(grid):
        return None
    return _html(grid, len(columns))


def _words(lines: list[TextLine]) -> list[Word]:
    """Each line's words; a line without word boxes counts as one word."""
    return [w for line in lines for w in (line.words or [Word(line.bbox, line.text)])]


def _rows(words: list[Word], tolerance: float) -> list[list[Word]]:
    """Words grouped by vertical centre, top to bottom, each row left to right."""
    rows: list[list[Word]] = []
    centres: list[float] = []
    for word in sorted(words, key=_middle):
        if rows and _middle(word) - centres[-1] <= tolerance:
            rows[-1].append(word)
            centres[-1] = statistics.fmean(_middle(w) for w in rows[-1])
        else:
            rows.append([word])
            centres.append(_middle(word))
    return [sorted(row, key=lambda w: w.bbox[0]) for row in rows]


def _middle(word: Word) -> float:
    return (word.bbox[1] + word.bbox[3]) / 2


def _runs(row: list[Word], gap: float) -> list[_Run]:
    """A row's words joined where they stand closer than ``gap``."""
    runs: list[_Run] = []
    for word in row:
        x1, x2 = word.bbox[0], word.bbox[2]
        if runs and x1 - runs[-1].x2 < gap:
            runs[-1].x2 = max(runs[-1].x2, x2)
            runs[-1].words.append(word)
        else:
            runs.append(_Run(x1, x2, [word]))
    return runs


def _join_wrapped(rows: list[list[_Run]]) -> list[list[_Run]]:
    """A row holding one run of words that starts in lower case ("of the patients") is
    the wrapped tail of a cell in the row above, not a row of its own."""
    joined: list[list[_Run]] = []
    for row in rows:
        if joined and len(row) == 1 and _continues(row[0].text):
            joined[-1] = joined[-1] + row
        else:
            joined.append(row)
    return joined


def _continues(text: str) -> bool:
    return text[:1].islower() and len(text) > 3


def _columns(rows: list[list[_Run]], gap: float) -> list[tuple[float, float]]:
    """x ranges that the rows holding several runs write into, gaps left out."""
    voters = [row for row in rows if len(row) >= 2]
    allowed = int(SPANNING_SHARE * len(voters))
    edges = sorted({x for row in voters for run in row for x in (run.x1, run.x2)})
    columns: list[tuple[float, float]] = []
    for left, right in itertools.pairwise(edges):
        if _is_gap(voters, (left + right) / 2, allowed):
            continue
        if columns and left - columns[-1][1] < gap:
            columns[-1] = (columns[-1][0], right)
        else:
            columns.append((left, right))
    return columns


def _is_gap(rows: list[list[_Run]], x: float, allowed: int) -> bool:
    """Few rows write across ``x``: no more than ``allowed`` (title and group-header
    rows), or far fewer than the rows with text on both sides of it (a misread that
    ran two cells together)."""
    across = beside = 0
    for row in rows:
        if any(r.x1 <= x <= r.x2 for r in row):
            across += 1
        elif any(r.x2 < x for r in row) and any(r.x1 > x for r in row):
            beside += 1
    return across <= allowed or across * BESIDE_RATIO < beside


def _cells(row: list[_Run], columns: list[tuple[float, float]]) -> list[_Cell]:
    """The row's runs placed on the columns they cover; runs sharing a column merge,
    top to bottom (a wrapped cell's lines)."""
    placed = [(*_span(run, columns), run) for run in row]
    placed.sort(key=lambda item: (item[0], item[2].top))
    cells: list[_Cell] = []
    for first, last, run in placed:
        if cells and first <= cells[-1].last:
            cells[-1].last = max(last, cells[-1].last)
            cells[-1].text = f"{cells[-1].text} {run.text}"
        else:
            cells.append(_Cell(first, last, run.text))
    return cells


def _span(run: _Run, columns: list[tuple[float, float]]) -> tuple[int, int]:
    """The columns a run overlaps, or the nearest one where it falls in a gap."""
    hit = [i for i, (x1, x2) in enumerate(columns) if run.x1 < x2 and run.x2 > x1]
    if hit:
        return hit[0], hit[-1]
    centre = (run.x1 + run.x2) / 2
    nearest = min(range(len(columns)), key=lambda i: span_distance(centre, columns[i]))
    return nearest, nearest


def _html(grid: list[list[_Cell]], width: int) -> str:
    """The grid as HTML, empty cells filling the columns no run reached."""
    rows = []
    for cells in grid:
        parts = []
        column = 0
        for cell in cells:
            parts.extend(["<td></td>"] * (cell.first - column))
            span = cell.last - cell.first + 1
            attribute = f' colspan="{span}"' if span > 1 else ""
            parts.append(f"<td{attribute}>{html.escape(cell.text, quote=False)}</td>")
            column = cell.last + 1
        parts.extend(["<td></td>"] * (width - column))
        rows.append("<tr>" + "".join(parts) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"
