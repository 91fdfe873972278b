"""The data model shared by every layer: cells, page results, document results.

Boxes are ``(x1, y1, x2, y2)`` in pixels of the original page frame: the source
image's own pixels, or for a PDF the page as rendered (at ``PageResult.dpi``, which is
below the requested DPI when a large page was capped to the model's pixel budget).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

BBox = tuple[int, int, int, int]
Point = tuple[int, int]
Quad = tuple[Point, Point, Point, Point]
"""Four corners ``(x, y)`` in the order the model gave them: a rotated or slanted box,
which a ``BBox`` can only bound."""

CATEGORIES: tuple[str, ...] = (
    "Caption",
    "Footnote",
    "Formula",
    "List-item",
    "Page-footer",
    "Page-header",
    "Picture",
    "Section-header",
    "Table",
    "Text",
    "Title",
)
"""The eleven layout categories dots.ocr was trained on, in the prompt's order."""

FURNITURE: frozenset[str] = frozenset({"Page-header", "Page-footer"})
"""Categories left out of Markdown by default, as benchmarks score it."""


class Cell(BaseModel):
    """One layout element: a box, its category and its text (None for pictures)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bbox: Annotated[BBox, Field(description="x1, y1, x2, y2 in original-page pixels")]
    category: Annotated[
        str, Field(description="One of CATEGORIES, or an unknown one kept as given")
    ]
    text: Annotated[str | None, Field(description="Markdown, LaTeX (Formula) or HTML (Table)")] = (
        None
    )
    confidence: Annotated[
        float | None, Field(description="0-1, from engines that give one; null for dots.ocr")
    ] = None
    quad: Annotated[
        Quad | None,
        Field(description="four corners in original-page pixels, for rotated scene text"),
    ] = None


class PageStatus(StrEnum):
    OK = "ok"
    REPAIRED = "repaired"  # answer was broken (cut, malformed, looping) and mended
    FALLBACK = "fallback"  # answer was not layout JSON; kept as plain text
    FAILED = "failed"  # no usable answer, or the page could not be rendered


class Reading(BaseModel):
    """What read a page, and how: enough to know whether to trust it and to redo it alike."""

    model_config = ConfigDict(extra="forbid")

    engine: Annotated[str, Field(description="the engine and its version, e.g. vllm 0.32.0")]
    model: Annotated[str | None, Field(description="the model's name where it was served")] = None
    profile: Annotated[str | None, Field(description="the model profile that built the prompt "
                                         "and parsed the answer")] = None  # fmt: skip
    task: str | None = None
    prompt: Annotated[str | None, Field(description="the prompt's text as sent")] = None
    image_size: Annotated[
        tuple[int, int] | None, Field(description="width, height of the image sent")
    ] = None
    served_size: Annotated[
        tuple[int, int] | None,
        Field(description="width, height the server resized the image to, when it did"),
    ] = None
    recogniser: Annotated[str | None, Field(description="the CPU engine's text recogniser")] = None
    orientation: Annotated[
        int | None, Field(description="degrees the CPU engine turned the page to read it")
    ] = None
    text_layer: Annotated[
        str | None,
        Field(description="the CPU engine and a PDF page's own text: 'used', or why not"),
    ] = None
    steps: Annotated[
        dict[str, float] | None,
        Field(description="milliseconds of each step the CPU engine ran on the page"),
    ] = None
    fallback: Annotated[
        bool, Field(description="read by the fallback engine because the server failed")
    ] = False


class PageResult(BaseModel):
    """Everything known about one page after OCR."""

    model_config = ConfigDict(extra="forbid")

    index: Annotated[int, Field(ge=0, description="0-based page index in the document")]
    width: Annotated[int, Field(ge=0, description="page frame width in pixels")]
    height: Annotated[int, Field(ge=0, description="page frame height in pixels")]
    dpi: float | None = None
    cells: list[Cell] = Field(default_factory=list)
    raw: Annotated[str | None, Field(description="the model's answer as received")] = None
    status: PageStatus = PageStatus.OK
    error: str | None = None
    notes: Annotated[list[str], Field(description="what was repaired, dropped or flagged")] = Field(
        default_factory=list
    )
    warnings: Annotated[
        list[str], Field(description="what looks wrong in a result that did not fail")
    ] = Field(default_factory=list)
    reading: Annotated[Reading | None, Field(description="what read the page, and how")] = None
    attempts: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float | None = None

    @property
    def number(self) -> int:
        """1-based page number, as people count."""
        return self.index + 1


class DocumentResult(BaseModel):
    """The pages of one source document, in page order."""

    model_config = ConfigDict(extra="forbid")

    source: str
    model: Annotated[str | None, Field(description="what read the pages (the served model, "
                                       "or the CPU engine)")] = None  # fmt: skip
    profile: Annotated[str | None, Field(description="the model profile asked for")] = None
    task: str | None = None
    pages: list[PageResult] = Field(default_factory=list)

    @property
    def status(self) -> str:
        """``ok`` when no page failed, ``failed`` when all did, else ``partial``."""
        failed = sum(p.status is PageStatus.FAILED for p in self.pages)
        if not failed:
            return "ok"
        return "failed" if failed == len(self.pages) else "partial"


def normalize_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Order corners so that x1 <= x2 and y1 <= y2."""
    x1, y1, x2, y2 = box
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def clip_box(box: tuple[float, float, float, float], width: int, height: int) -> BBox:
    """Clip to the page, then round to whole pixels (NaN counts as 0)."""
    x1, y1, x2, y2 = normalize_box(box)

    def fit(v: float, hi: int) -> int:
        return round(min(max(v, 0.0), float(hi))) if v == v else 0

    return fit(x1, width), fit(y1, height), fit(x2, width), fit(y2, height)


def rescale_box(
    box: tuple[float, float, float, float], source: tuple[int, int], target: tuple[int, int]
) -> BBox:
    """A box in a ``source``-sized frame, in a ``target``-sized frame, clipped to it."""
    sx = target[0] / source[0] if source[0] else 1.0
    sy = target[1] / source[1] if source[1] else 1.0
    x1, y1, x2, y2 = box
    return clip_box((x1 * sx, y1 * sy, x2 * sx, y2 * sy), *target)


def box_area(box: tuple[float, float, float, float]) -> float:
    x1, y1, x2, y2 = box
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)
