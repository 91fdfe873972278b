"""Page selections such as ``1-3,7`` or ``5-`` (1-based, as people count)."""

from __future__ import annotations

import re

from dotsocr.errors import PageSelectionError

_PART = re.compile(r"^\s*(\d*)\s*(-?)\s*(\d*)\s*$")


def select_pages(spec: str | None, page_count: int, source: str = "<input>") -> list[int]:
    """Return the sorted 0-based page indexes that ``spec`` selects.

    Ranges are clipped to the document (``5-`` means page 5 to the end, ``3-99`` on a
    7-page file means 3 to 7); a single page number past the end is an error, and so is
    a selection that keeps no page.
    """
    if spec is None or spec.strip().lower() in ("", "all"):
        return list(range(page_count))
    chosen: set[int] = set()
    for part in spec.split(","):
        match = _PART.match(part)
        if not match or not (match[1] or match[3]) or (not match[2] and not match[1]):
            raise PageSelectionError(
                source, f"bad page selection {spec!r}: use numbers and ranges like 1-3,7 or 5-"
            )
        first = int(match[1]) if match[1] else 1
        if not match[2]:
            if not 1 <= first <= page_count:
                raise PageSelectionError(
                    source, f"page {first} does not exist: the document has {page_count} page(s)"
                )
            chosen.add(first - 1)
            continue
        last = int(match[3]) if match[3] else page_count
        if first < 1 or last < first:
            raise PageSelectionError(source, f"bad page range {part.strip()!r} in {spec!r}")
        chosen.update(range(first - 1, min(last, page_count)))
    if not chosen:
        raise PageSelectionError(
            source, f"selection {spec!r} keeps no page: the document has {page_count} page(s)"
        )
    return sorted(chosen)


def as_ranges(numbers: list[int]) -> str:
    """Sorted page numbers in the form ``select_pages`` reads: [1, 2, 3, 7] -> ``1-3,7``."""
    parts: list[str] = []
    start = previous = None
    for number in [*sorted(numbers), None]:
        if start is not None and number == previous + 1:  # type: ignore[operator]
            previous = number
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = number
    return ",".join(parts)
