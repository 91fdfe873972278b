"""Markdown from page results.

Cells keep the model's reading order and are joined by one blank line. Formulas
become display math, tables stay HTML, headings get their ``#`` and pictures are
cropped from the page image.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

from dotsocr.layout import FURNITURE, Cell, DocumentResult, PageResult, PageStatus
from dotsocr.render._common import image_box, join_blocks, strip_math, to_png_bytes, trim_block

PictureMode = Literal["files", "inline", "omit", "linked"]

_DELIMITER = re.compile(r"(?<!\\)(?:\$|\\\[|\\\])")  # $, \[ or \], but not \$ or \\[2pt]
_HEADINGS = {"Title": "# ", "Section-header": "## "}


@dataclass(frozen=True)
class RenderedMarkdown:
    """Markdown text and the picture files it links to (name -> PNG bytes)."""

    text: str
    assets: dict[str, bytes] = field(default_factory=dict)


def _has_math_delimiters(latex: str) -> bool:
    return bool(_DELIMITER.search(latex))


def html_comment(text: str) -> str:
    """An HTML comment on one line that cannot be closed early by its content."""
    return "<!-- " + " ".join(text.split()).replace("--", "- -") + " -->"


def render_markdown(
    doc: DocumentResult,
    *,
    page_images: Mapping[int, Image.Image] | None = None,
    include_furniture: bool = False,
    pictures: PictureMode = "files",
    asset_prefix: str = "",
) -> RenderedMarkdown:
    """Render a document as Markdown.

    Args:
        doc: the OCR result.
        page_images: page index -> page image, used to crop pictures; any pixel size.
        include_furniture: keep Page-header and Page-footer cells.
        pictures: ``files`` links to PNGs returned in ``assets``, ``inline`` embeds
            them as data URIs, ``omit`` leaves pictures out, ``linked`` links to the
            files an earlier ``files`` rendering returned (no image needed).
        asset_prefix: put before each asset name in links, e.g. ``"doc_files/"``.

    Returns:
        The Markdown text (one trailing newline, empty for an empty document) and
        the assets to write beside it.

    Example:
        >>> out = render_markdown(doc, page_images={0: img}, asset_prefix="a/")
        >>> out.text.startswith("# ")
        True
    """
    if pictures not in ("files", "inline", "omit", "linked"):
        raise ValueError(f"pictures must be files, inline, omit or linked, not {pictures!r}")
    images = page_images or {}
    assets: dict[str, bytes] = {}
    blocks: list[str] = []
    for page in doc.pages:
        if page.status is PageStatus.FAILED:
            reason = f": {page.error}" if page.error else ""
            blocks.append(html_comment(f"page {page.number} failed{reason}"))
        for position, cell in enumerate(page.cells, start=1):
            if cell.category in FURNITURE and not include_furniture:
                continue
            if cell.category == "Picture":
                image = images.get(page.index)
                blocks.append(_picture(page, position, cell, image, pictures, asset_prefix, assets))
            else:
                blocks.append(_cell_markdown(cell))
    return RenderedMarkdown(text=join_blocks(blocks), assets=assets)


def _cell_markdown(cell: Cell) -> str:
    text = trim_block(cell.text or "")
    if not text.strip():
        return ""
    if cell.category == "Formula":
        latex = strip_math(text)
        if _has_math_delimiters(latex):  # several formulas, each already marked up
            return text
        return f"$$\n{latex}\n$$"
    prefix = _HEADINGS.get(cell.category)
    if prefix and not text.lstrip().startswith("#"):
        return prefix + " ".join(text.split())  # a heading must stay on one line
    return text


def _picture(
    page: PageResult,
    position: int,
    cell: Cell,
    image: Image.Image | None,
    mode: PictureMode,
    prefix: str,
    assets: dict[str, bytes],
) -> str:
    if mode == "omit":
        return ""
    name = f"page-{page.number:04d}-picture-{position:02d}.png"
    if mode == "linked":  # written earlier, page by page, with "files"
        return f"![Picture]({prefix}{name})"
    box = image_box(cell.bbox, page, image.size) if image is not None else None
    if image is None or box is None or box[0] >= box[2] or box[1] >= box[3]:  # nothing to crop
        return html_comment("Picture " + ",".join(str(v) for v in cell.bbox))
    png = to_png_bytes(image.crop(box))
    if mode == "inline":
        return f"![Picture](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
    assets[name] = png
    return f"![Picture]({prefix}{name})"
