"""Turning salvaged answer objects into clean cells: boxes mapped back, loops collapsed."""

from __future__ import annotations

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
REPEATED_CELLS_LIMIT = 4


def canonical_category(name: str) -> tuple[str, bool]:
    """The canonical spelling of a category, and whether it is one of the known ones."""
    known = _CANONICAL.get(name.strip().lower())
    return (known, True) if known else (name.strip() or "Unknown", False)


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
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if any(n != n or abs(n) == float("inf") for n in numbers):  # NaN or infinite
        return None
    return numbers  # type: ignore[return-value]


def objects_to_cells(
    objects: Iterable[Any], geometry: Geometry, *, with_text: bool, notes: list[str]
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
        category, known = canonical_category(str(obj.get("category") or ""))
        if not known:
            unknown.add(category)
        text = obj.get("text")
        if text is not None and not isinstance(text, str):
            text = str(text)
        if text is not None:
            text, runs = collapse_runaway(text)
            runaway += runs
        bbox = geometry.to_page(box)
        if box_area(bbox) == 0:
            degenerate += 1
        cells.append(Cell(bbox=bbox, category=category, text=text if with_text else None))
    if invalid:
        notes.append(f"{invalid} item(s) without a usable bbox dropped")
    if degenerate:
        notes.append(f"{degenerate} cell(s) with an empty box after clipping to the page")
    if runaway:
        notes.append(f"{runaway} runaway repeat(s) in cell text collapsed")
    for name in sorted(unknown):
        notes.append(f"unknown category {name!r} kept")
    return _drop_repeats(cells, notes)


def _drop_repeats(cells: list[Cell], notes: list[str]) -> list[Cell]:
    """Remove exact duplicates, and long runs of the same text that a loop produces."""
    seen: set[Cell] = set()
    kept: list[Cell] = []
    duplicates = looped = 0
    run = 0
    for cell in cells:
        if cell in seen:
            duplicates += 1
            continue
        seen.add(cell)
        previous = kept[-1] if kept else None
        same = (
            previous is not None
            and cell.text
            and previous.text == cell.text
            and previous.category == cell.category
        )
        run = run + 1 if same else 1
        if run >= REPEATED_CELLS_LIMIT:
            looped += 1
            continue
        kept.append(cell)
    if duplicates:
        notes.append(f"{duplicates} duplicate cell(s) removed")
    if looped:
        notes.append(f"{looped} repeated cell(s) from a loop collapsed")
    return kept
