"""``dotsocr render``: turn a saved raw answer back into outputs, for debugging and tests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from dotsocr.document import DocumentOptions, Page, open_document
from dotsocr.errors import ConfigError
from dotsocr.layout import DocumentResult, PageResult
from dotsocr.models import Geometry, ModelProfile, get_profile
from dotsocr.output import write_atomic

FORMATS = ("md", "json", "txt", "png")
_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class RenderRequest:
    image: Path
    document: DocumentOptions
    format: str | None = None
    output: Path | None = None
    task: str = "layout_all"
    answer_size: str | None = None
    finish_reason: str | None = None
    include_furniture: bool = False
    pictures: str = "files"
    model: str = "dots.ocr"


def output_format(fmt: str | None, output: Path | None) -> str:
    """The format asked for, else the one the output's suffix names, else Markdown."""
    if fmt:
        return fmt
    if output is None:
        return "md"
    suffix = output.suffix[1:].lower()
    if suffix == "markdown":
        return "md"
    if suffix not in FORMATS:
        raise ConfigError(
            f"cannot tell the format from {output.name!r}: name it .md, .json, .txt or .png, "
            "or pass --format"
        )
    return suffix


def rerender(answer: str, req: RenderRequest) -> str | None:
    """Render ``answer`` for the request's page; return text for stdout, or None once written."""
    profile = get_profile(req.model)
    if req.task not in profile.tasks:
        raise ConfigError(f"unknown task {req.task!r}: choose one of {', '.join(profile.tasks)}")
    fmt = output_format(req.format, req.output)
    if fmt == "png" and req.output is None:
        raise ConfigError("--format png needs --output FILE")
    page = _load_page(req, profile)
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
    return _emit(req, fmt, doc, page)


def _load_page(req: RenderRequest, profile: ModelProfile) -> Page:
    options = req.document.within(profile.max_pixels)
    with open_document(req.image, options) as doc:
        page = next(doc.pages())
    if not isinstance(page, Page):
        raise page.error
    return page


def _geometry(answer_size: str | None, page: Page, profile: ModelProfile) -> Geometry:
    if answer_size is None:
        w, h = profile.model_size(page.image.width, page.image.height)
    else:
        match = _SIZE.match(answer_size)
        if not match or not int(match[1]) or not int(match[2]):
            raise ConfigError(f"--answer-size {answer_size!r}: use WIDTHxHEIGHT, e.g. 1232x1596")
        w, h = int(match[1]), int(match[2])
    return Geometry(page.width, page.height, w, h)


def _emit(req: RenderRequest, fmt: str, doc: DocumentResult, page: Page) -> str | None:
    from dotsocr import render

    if fmt == "png":
        annotated = render.render_annotated(doc.pages[0], page.image)
        write_atomic(req.output, render.to_png_bytes(annotated))  # type: ignore[arg-type]
        return None
    if fmt == "json":
        text = render.render_json(doc)
    elif fmt == "txt":
        text = render.render_text(doc, include_furniture=req.include_furniture)
    else:
        # Picture files need a folder to go to; on stdout they are left out.
        pictures = req.pictures if req.output or req.pictures != "files" else "omit"
        folder = f"{req.output.stem}_files/" if req.output else ""
        md = render.render_markdown(
            doc,
            page_images={page.index: page.image},
            include_furniture=req.include_furniture,
            pictures=pictures,  # type: ignore[arg-type]
            asset_prefix=quote(folder),
        )
        text = md.text
        for name, data in md.assets.items():
            write_atomic(req.output.parent / folder / name, data)  # type: ignore[union-attr]
    if req.output is None:
        return text
    write_atomic(req.output, text)
    return None
