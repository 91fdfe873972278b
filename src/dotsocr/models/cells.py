"""Turning salvaged answer objects into clean cells: boxes mapped back, loops collapsed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from dotsocr.layout import CATEGORIES, Cell, box_area
from dotsocr.models.base import Geometry

_CANONICAL = {c.lower(): c for c in CATEGORIES}
_CANONICAL.update({c.lower().replace("-", "_"): c for c in CATEGORIES})
_CANONICAL.update({c.lower().replace("-", " "): c for c in CATEGORIES})

RUNAWAY_MIN_REPEATS = 50
RUNAWAY_MIN_SPAN = 200
RUNAWAY_KEEP = 3
# A unit of 1-64 characters repeated RUNAWAY_MIN_REPEATS+ times in a row: a decoding loop.
_RUNAWAY = re.compile(rf"(.{{1,64}}?)\1{{{RUNAWAY_MIN_REPEATS - 1},}}", re.DOTALL)
MAX_COORDINATE = 1e7  # beyond any page the model can see: a garbled number
LOOP_MAX_PERIOD = 4  # loops of up to four alternating cells are recognised
LOOP_MIN_REPEATS = 8  # a pattern repeated this often in a row is a loop ...
LOOP_MIN_REPEATS_WHEN_CUT = 4  # ... or this often when the answer ran out of tokens
LOOP_KEEP_REPEATS = 3


def canonical_category(value: Any) -> tuple[str, bool]:
    """The canonical spelling of a category, and whether it is one of the known ones."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    name = value.strip() if isinstance(value, str) else ""
    known = _CANONICAL.get(name.lower())
    return (known, True) if known else (name or "Unknown", False)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def collapse_runaway(text: str) -> tuple[str, int]:
    """Shorten runs that only a looping decoder writes; return the text and runs collapsed."""
    collapsed = 0

    def shorten(match: re.Match[str]) -> str:
        nonlocal collapsed
        if len(match.group(0)) < RUNAWAY_MIN_SPAN:
            return match.group(0)
        collapsed += 1
        return match.group(1) * RUNAWAY_KEEP

    return _RUNAWAY.sub(shorten, text), collapsed


def _box(value: Any) -> tuple[float, float, float, float] | None:
    """Read a box given as [x1, y1, x2, y2], [[x1, y1], [x2, y2]] or strings of numbers."""
    if isinstance(value, dict):
        value = [value.get(k) for k in ("x1", "y1", "x2", "y2")]
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, list | tuple) for v in value)
    ):
        value = [*value[0], *value[1]]
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    if any(isinstance(v, bool) for v in value):
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not all(abs(n) <= MAX_COORDINATE for n in numbers):  # also false for NaN
        return None
    return numbers  # type: ignore[return-value]


def objects_to_cells(
    objects: Iterable[Any],
    geometry: Geometry,
    *,
    with_text: bool,
    notes: list[str],
    truncated: bool = False,
) -> list[Cell]:
    """Validate answer objects into cells in page pixels; record every liberty taken in notes."""
    cells: list[Cell] = []
    invalid = degenerate = runaway = 0
    unknown: set[str] = set()
    for obj in objects:
        box = _box(obj.get("bbox")) if isinstance(obj, dict) else None
        if box is None:
            invalid += 1
            continue
        category, known = canonical_category(obj.get("category"))
        if not known:
            unknown.add(category)
        text = _text(obj.get("text"))
        if text is not None:
            text, runs = collapse_runaway(text)
            runaway += runs
        bbox = geometry.to_page(box)
        if box_area(bbox) == 0:
            degenerate += 1
        cells.append(Cell(bbox=bbox, category=category, text=text if with_text else None))
    if invalid:
        notes.append(f"{invalid} item(s) without a usable bbox dropped")
    note_mending(notes, degenerate=degenerate, runaway=runaway)
    for name in sorted(unknown):
        notes.append(f"unknown category {name!r} kept")
    return tidy_cells(cells, notes, truncated)


def note_mending(notes: list[str], *, degenerate: int, runaway: int) -> None:
    """The notes on boxes clipped to nothing and on runaway repeats collapsed."""
    if degenerate:
        notes.append(f"{degenerate} cell(s) with an empty box after clipping to the page")
    if runaway:
        notes.append(f"{runaway} runaway repeat(s) in cell text collapsed")


def tidy_cells(cells: list[Cell], notes: list[str], truncated: bool) -> list[Cell]:
    """Cells without exact duplicates and without the loop a model fell into, noted."""
    return _drop_loops(_drop_duplicates(cells, notes), notes, truncated)


def _drop_duplicates(cells: list[Cell], notes: list[str]) -> list[Cell]:
    seen: set[Cell] = set()
    kept: list[Cell] = []
    for cell in cells:
        if cell not in seen:
            seen.add(cell)
            kept.append(cell)
    if len(kept) < len(cells):
        notes.append(f"{len(cells) - len(kept)} duplicate cell(s) removed")
    return kept


def _drop_loops(cells: list[Cell], notes: list[str], truncated: bool) -> list[Cell]:
    """Cut runs where one cell, or a short cycle of cells, repeats the same text over and
    over: what a looping decoder writes. A few repeats are kept; genuine repeated cells
    (a column of "N/A") rarely come in such long runs.
    """
    threshold = LOOP_MIN_REPEATS_WHEN_CUT if truncated else LOOP_MIN_REPEATS
    keys = [(c.category, c.text) if c.text else None for c in cells]
    kept: list[Cell] = []
    dropped = 0
    i = 0
    while i < len(cells):
        for period in range(1, LOOP_MAX_PERIOD + 1):
            end = i + period
            while end < len(keys) and keys[end] is not None and keys[end] == keys[end - period]:
                end += 1
            if (end - i) // period >= threshold and None not in keys[i : i + period]:
                keep = period * LOOP_KEEP_REPEATS
                kept.extend(cells[i : i + keep])
                dropped += end - i - keep
                i = end
                break
        else:
            kept.append(cells[i])
            i += 1
    if dropped:
        notes.append(f"{dropped} repeated cell(s) from a loop collapsed")
    return kept
