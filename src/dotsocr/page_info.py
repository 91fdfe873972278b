"""What ``dotsocr pages`` reports: each page's size, model-ready size and token cost."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dotsocr.document import DocumentOptions, Page, open_document
from dotsocr.document.sources import expand_paths
from dotsocr.errors import DotsOCRError, PageTooExtreme
from dotsocr.models import get_profile


@dataclass(frozen=True)
class PageLine:
    text: str = ""
    error: str = ""


def describe_inputs(
    paths: Iterable[Path],
    pages: str | None,
    dpi: float,
    password: str | None,
    max_image_pixels: int | None,
    model: str,
) -> Iterator[PageLine]:
    """One line per page, or one error line per bad file or page; never raises for inputs."""
    profile = get_profile(model)
    options = DocumentOptions(
        pages=pages,
        dpi=dpi,
        password=password,
        max_image_pixels=max_image_pixels,
        max_pixels=profile.max_pixels,
    )
    for path in expand_paths(paths):
        try:
            with open_document(path, options) as doc:
                for page in doc.pages():
                    if not isinstance(page, Page):
                        yield PageLine(error=str(page.error))
                        continue
                    yield _describe(profile, page, doc.page_count)
        except DotsOCRError as exc:
            yield PageLine(error=str(exc))


def _describe(profile, page: Page, count: int) -> PageLine:
    where = f"{page.source}  page {page.number}/{count}"
    try:
        w, h = profile.model_size(page.image.width, page.image.height)
    except PageTooExtreme as exc:
        return PageLine(error=f"{where}: {exc}")
    size = f"{page.width}x{page.height} px"
    if page.dpi is not None:
        size += f" @ {page.dpi:g} dpi"
    tokens = profile.image_tokens(page.image.width, page.image.height)
    line = f"{where}  {size}  -> model {w}x{h}  {tokens:,} image tokens"
    if page.notes:
        line += "  (" + "; ".join(page.notes) + ")"
    return PageLine(text=line)
