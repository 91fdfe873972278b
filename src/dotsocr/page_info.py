"""What ``dotsocr pages`` reports: each page's size, model-ready size and token cost."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dotsocr.document import DocumentOptions, Page, open_document
from dotsocr.document.sources import expand_paths
from dotsocr.errors import DotsOCRError, PageTooExtreme
from dotsocr.models import ModelProfile


@dataclass(frozen=True)
class PageLine:
    text: str = ""
    error: str = ""


def describe_inputs(
    paths: Iterable[Path], options: DocumentOptions, profile: ModelProfile
) -> Iterator[PageLine]:
    """One line per page, or one error line per bad file or page; one file never stops the rest."""
    options = options.within(profile.max_pixels)
    for path in expand_paths(paths):
        if isinstance(path, DotsOCRError):
            yield PageLine(error=str(path))
            continue
        try:
            with open_document(path, options) as doc:
                for page in doc.pages():
                    if isinstance(page, Page):
                        yield _describe(profile, page, doc.page_count)
                    else:
                        yield PageLine(error=str(page.error))
        except DotsOCRError as exc:
            yield PageLine(error=str(exc))
        except Exception as exc:  # a bug of ours must not cost the other files
            if os.environ.get("DOTSOCR_DEBUG") == "1":
                raise
            yield PageLine(error=f"{path}: unexpected {type(exc).__name__}: {exc} (please report)")


def _describe(profile: ModelProfile, page: Page, count: int) -> PageLine:
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
