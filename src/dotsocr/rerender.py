"""``dotsocr render``: turn a saved raw answer back into outputs, for debugging and tests."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from dotsocr.document import DocumentOptions, Page, open_document
from dotsocr.errors import ConfigError
from dotsocr.layout import DocumentResult, PageResult
from dotsocr.models import Geometry, get_profile
from dotsocr.output import write_atomic

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class RenderRequest:
    answer: Path
    image: Path
    page: int = 1
    format: str = "md"
    output: Path | None = None
    task: str = "layout_all"
    answer_size: str | None = None
    finish_reason: str | None = None
    include_furniture: bool = False
    pictures: str = "files"
    dpi: float = 200
    password: str | None = None
    model: str = "dots.ocr"


def rerender(req: RenderRequest) -> str | None:
    """Render the answer; return the text for stdout, or None when written to req.output."""
    profile = get_profile(req.model)
    if req.task not in profile.tasks:
        raise ConfigError(f"unknown task {req.task!r}: choose one of {', '.join(profile.tasks)}")
    if req.format == "png" and req.output is None:
        raise ConfigError("--format png needs --output FILE")
    answer = _read_answer(req.answer)
    page = _load_page(req, profile.max_pixels)
    geometry = _geometry(req.answer_size, page, profile)
    parsed = profile.parse(answer, geometry, req.task, finish_reason=req.finish_reason)
    result = PageResult(
        index=page.index,
        width=page.width,
        height=page.height,
        dpi=page.dpi,
        cells=parsed.cells,
        raw=answer,
        status=parsed.status,
        notes=parsed.notes,
    )
    doc = DocumentResult(source=page.source, model=profile.name, task=req.task, pages=[result])
    return _emit(req, doc, page)


def _read_answer(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the answer ({exc.strerror})") from None


def _load_page(req: RenderRequest, max_pixels: int) -> Page:
    options = DocumentOptions(
        pages=str(req.page), dpi=req.dpi, password=req.password, max_pixels=max_pixels
    )
    with open_document(req.image, options) as doc:
        page = next(doc.pages())
    if not isinstance(page, Page):
        raise page.error
    return page


def _geometry(answer_size: str | None, page: Page, profile) -> Geometry:
    if answer_size is None:
        w, h = profile.model_size(page.image.width, page.image.height)
    else:
        match = _SIZE.match(answer_size)
        if not match or not int(match[1]) or not int(match[2]):
            raise ConfigError(f"--answer-size {answer_size!r}: use WIDTHxHEIGHT, e.g. 1232x1596")
        w, h = int(match[1]), int(match[2])
    return Geometry(page.width, page.height, w, h)


def _emit(req: RenderRequest, doc: DocumentResult, page: Page) -> str | None:
    from dotsocr import render

    if req.format == "png":
        annotated = render.render_annotated(doc.pages[0], page.image)
        write_atomic(req.output, render.to_png_bytes(annotated))  # type: ignore[arg-type]
        return None
    if req.format == "json":
        text = render.render_json(doc)
    elif req.format == "txt":
        text = render.render_text(doc, include_furniture=req.include_furniture)
    else:
        pictures = req.pictures if req.output or req.pictures != "files" else "omit"
        prefix = f"{req.output.stem}_files/" if req.output else ""
        md = render.render_markdown(
            doc,
            page_images={page.index: page.image},
            include_furniture=req.include_furniture,
            pictures=pictures,  # type: ignore[arg-type]
            asset_prefix=prefix,
        )
        text = md.text
        for name, data in md.assets.items():
            write_atomic(req.output.parent / prefix / name, data)  # type: ignore[union-attr]
    if req.output is None:
        return text
    write_atomic(req.output, text)
    return None
