"""The reading order of boxes on a page, by recursive XY-cut.

A page is read by cutting it at clear bands no box crosses: horizontal bands split it
into stacked sections (a headline, a block of columns, a figure across the page), and
vertical bands split a section into columns, read left to right. A run of horizontal
bands that keeps one gutter clear is one block of columns, not many sections: two
columns whose lines or paragraph breaks happen to line up would otherwise be read
across, row by row.

Scans and recognisers are untidy, so boxes are first shrunk a little (a line that
reaches a few pixels into a gutter, or a headline whose descenders touch the first
line below, must not hide the cut), and specks (dots, short rules, stray marks) are left
out when looking for cuts and then follow the part nearest to them.
"""

from __future__ import annotations

from dotsocr.text_lines import Box, Span, span_distance

SLACK_X = 0.02
"""Each box gives up this share of the page's width on its left and right when looking
for cuts: a line may reach that far into a gutter (34 px at 200 DPI)."""
SLACK_Y = 0.004
"""And this share of the page's height at its top and bottom (9 px at 200 DPI)."""
SLACK_SHARE_X = 0.2
SLACK_SHARE_Y = 0.1
"""Never more than these shares of the box's own width and height: a line shrunk by more
than a tenth of its height could slip between two lines of the next column."""
SECTION_GAP = 0.04
"""A clear band this tall (a share of the page's height: 88 px at 200 DPI) parts a block
of columns from a line over one of them."""
SPECK_AREA = 1e-4
"""Boxes smaller than this share of the page (a 27-pixel square at 200 DPI) are specks."""
SPECK_THIN = 0.003
"""So are boxes thinner than this share of the page's larger side: rules, bars, a "|"."""


def reading_order(boxes: list[Box], width: float, height: float) -> list[int]:
    """The indices of ``boxes`` in the order a person reads them.

    Args:
        boxes: ``(x1, y1, x2, y2)`` in the page's pixels, origin top left.
        width, height: the page's size in the same pixels, which scales the tolerances.

    Returns:
        A permutation of ``range(len(boxes))``: sections top to bottom, the columns of a
        section left to right, each column top to bottom. Where no cut separates boxes
        (they overlap), top to bottom and then left to right.

    Example:
        >>> reading_order([(600, 100, 1000, 900), (100, 100, 500, 900)], 1100, 1000)
        [1, 0]
    """
    if not boxes:
        return []
    cores = [_core(box, width, height) for box in boxes]
    specks = frozenset(i for i, box in enumerate(boxes) if _speck(box, width, height))
    if len(specks) == len(boxes):
        specks = frozenset()
    return _order(list(range(len(boxes))), cores, specks, height)


def _core(box: Box, width: float, height: float) -> Box:
    """The box less its slack: the part of it that must not cross a cut."""
    x1, y1, x2, y2 = box
    dx = min(SLACK_X * width, SLACK_SHARE_X * max(x2 - x1, 0.0))
    dy = min(SLACK_Y * height, SLACK_SHARE_Y * max(y2 - y1, 0.0))
    return (x1 + dx, y1 + dy, x2 - dx, y2 - dy)


def _speck(box: Box, width: float, height: float) -> bool:
    w, h = box[2] - box[0], box[3] - box[1]
    return w * h < SPECK_AREA * width * height or min(w, h) < SPECK_THIN * max(width, height)


def _order(
    members: list[int], cores: list[Box], specks: frozenset[int], height: float
) -> list[int]:
    """Cut ``members`` into sections or columns and read each in turn."""
    if len(members) <= 1:
        return members
    solid = [i for i in members if i not in specks] or members
    axis, parts = 1, _sections(solid, cores, height)
    if len(parts) < 2:
        axis, parts = 0, _runs(solid, cores, axis=0)
    if len(parts) < 2:
        return sorted(members, key=lambda i: (cores[i][1], cores[i][0]))
    groups = _with_specks(members, parts, cores, axis)
    return [i for group in groups for i in _order(group, cores, specks, height)]


def _runs(members: list[int], cores: list[Box], axis: int) -> list[list[int]]:
    """Members split at every clear band across ``axis`` (0: x, 1: y), in order along it."""
    ordered = sorted(members, key=lambda i: cores[i][axis])
    runs: list[list[int]] = []
    end = 0.0
    for i in ordered:
        start, stop = cores[i][axis], cores[i][axis + 2]
        if runs and start <= end:
            runs[-1].append(i)
            end = max(end, stop)
        else:
            runs.append([i])
            end = stop
    return runs


def _sections(members: list[int], cores: list[Box], height: float) -> list[list[int]]:
    """Horizontal bands, with runs of bands that share a column layout kept together.

    A band joins the section above when the two together still leave a gutter clear and
    the gutter is a column layout's: both have one of their own; or one has, and no
    wide band of white parts them (a line over one column, far above or below the
    columns, is a heading or a banner of its own); or the band sits close under the
    section (two columns' lines interleaving).
    """
    sections: list[list[int]] = []
    cover: list[Span] = []
    last: Span = (0.0, 0.0)
    for band in _runs(members, cores, axis=1):
        own = _cover(band, cores)
        span = (min(cores[i][1] for i in band), max(cores[i][3] for i in band))
        joined = _union(cover, own)
        gap = span[0] - last[1]
        if len(own) > 1 and len(cover) > 1:  # the columns go on
            columns = True
        elif len(own) > 1 or len(cover) > 1:  # columns start or one goes on: unless a wide
            columns = gap <= SECTION_GAP * height  # white band parts them
        else:  # two columns' lines interleaving
            columns = gap <= min(last[1] - last[0], span[1] - span[0])
        if sections and len(joined) > 1 and columns:
            sections[-1].extend(band)
            cover = joined
        else:
            sections.append(list(band))
            cover = own
        last = span
    return sections


def _cover(members: list[int], cores: list[Box]) -> list[Span]:
    """The x spans the members cover, merged, left to right."""
    spans = sorted((cores[i][0], cores[i][2]) for i in members)
    return _union([], spans)


def _union(a: list[Span], b: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(a + b):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _with_specks(
    members: list[int],
    parts: list[list[int]],
    cores: list[Box],
    axis: int,
) -> list[list[int]]:
    """The parts with the specks among ``members`` added to the part nearest each."""
    groups = [list(part) for part in parts]
    placed = {i for part in parts for i in part}
    spans = [
        (min(cores[i][axis] for i in part), max(cores[i][axis + 2] for i in part)) for part in parts
    ]
    for i in members:
        if i in placed:
            continue
        middle = (cores[i][axis] + cores[i][axis + 2]) / 2
        nearest = min(range(len(spans)), key=lambda k: span_distance(middle, spans[k]))
        groups[nearest].append(i)
    return groups
