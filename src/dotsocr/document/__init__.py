"""Inputs to page images: open a path or bytes, then iterate its pages lazily.

>>> with open_document("scan.pdf", DocumentOptions(pages="1-3")) as doc:
...     for page in doc.pages():
...         ...  # a Page (RGB image + frame size) or a PageError for that page
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from dotsocr.document import images, pdf
from dotsocr.document.selection import select_pages
from dotsocr.document.sniff import sniff
from dotsocr.errors import CorruptDocument, DocumentError, EmptyDocument, NotADocument

__all__ = ["Document", "DocumentOptions", "Page", "PageError", "open_document", "select_pages"]

DEFAULT_MAX_PIXELS = 11_289_600  # dots.ocr's pixel budget


class DocumentOptions(BaseModel):
    """How inputs become page images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pages: Annotated[str | None, Field(description="page selection such as 1-3,7 (1-based)")] = None
    dpi: Annotated[float, Field(gt=0, le=1200, description="PDF render resolution")] = 200
    max_pixels: Annotated[
        int | None,
        Field(
            gt=0,
            description="pixel cap per page: PDFs render at the highest DPI that fits, "
            "larger images are downscaled; None keeps full size",
        ),
    ] = DEFAULT_MAX_PIXELS
    password: Annotated[str | None, Field(description="password of an encrypted PDF")] = None
    max_image_pixels: Annotated[
        int | None,
        Field(gt=0, description="refuse source images or renders above this many pixels"),
    ] = 178_956_970


@dataclass
class Page:
    """One page ready for a model: an upright RGB image and the frame results use.

    ``width`` x ``height`` is the coordinate frame of results: the source image's
    pixels, or the PDF page at ``dpi``. ``image`` may be smaller when it was capped.
    """

    source: str
    index: int
    image: Image.Image
    width: int
    height: int
    dpi: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def number(self) -> int:
        return self.index + 1


@dataclass
class PageError:
    """A page that could not be rendered; its document's other pages still come."""

    source: str
    index: int
    error: DocumentError

    @property
    def number(self) -> int:
        return self.index + 1


class Document:
    """An opened input. Use as a context manager; ``pages()`` renders one page at a time."""

    def __init__(
        self,
        source: str,
        kind: Literal["pdf", "image"],
        handle: object,
        options: DocumentOptions,
        notes: list[str],
    ) -> None:
        self.source = source
        self.kind = kind
        self.options = options
        self._handle = handle
        self._notes = notes
        count = len(handle) if kind == "pdf" else images.frame_count(handle)  # type: ignore[arg-type]
        self.page_count: int = count
        self.selected: list[int] = select_pages(options.pages, count, source)

    def pages(self) -> Iterator[Page | PageError]:
        """Yield the selected pages in order, rendering each only when asked for."""
        render = self._pdf_page if self.kind == "pdf" else self._image_page
        for index in self.selected:
            try:
                yield render(index)
            except DocumentError as exc:
                yield PageError(self.source, index, exc)

    def _pdf_page(self, index: int) -> Page:
        opts = self.options
        try:
            page = self._handle[index]  # type: ignore[index]
        except Exception as exc:  # PDFium's errors carry no type of their own per page
            raise CorruptDocument(self.source, f"page {index + 1} cannot be read ({exc})") from None
        try:
            scale = pdf.render_scale(
                page.get_size(), opts.dpi, opts.max_pixels, self.source, index + 1
            )
            w_pt, h_pt = page.get_size()
            size = (math.ceil(w_pt * scale), math.ceil(h_pt * scale))
            images.check_pixels(size, opts.max_image_pixels, self.source, f"page {index + 1}")
            try:
                image = page.render(scale=scale, may_draw_forms=True).to_pil().convert("RGB")
            except Exception as exc:
                raise CorruptDocument(
                    self.source, f"page {index + 1} cannot be rendered ({exc})"
                ) from None
        finally:
            page.close()
        dpi = scale * pdf.POINTS_PER_INCH
        notes = list(self._notes)
        if dpi < opts.dpi - 0.05:
            notes.append(f"rendered at {dpi:.0f} DPI to fit the {opts.max_pixels:,} pixel cap")
        return Page(self.source, index, image, image.width, image.height, round(dpi, 2), notes)

    def _image_page(self, index: int) -> Page:
        handle: Image.Image = self._handle  # type: ignore[assignment]
        with images.decoding(self.source):
            handle.seek(index)
        width, height = images.upright_size(handle, self.source)
        images.check_pixels((width, height), self.options.max_image_pixels, self.source, "image")
        notes = list(self._notes)
        image = images.to_page_image(
            handle, self.source, max_pixels=self.options.max_pixels, notes=notes
        )
        return Page(self.source, index, image, width, height, None, notes)

    def close(self) -> None:
        self._handle.close()  # type: ignore[attr-defined]

    def __enter__(self) -> Document:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_document(
    source: str | Path | bytes,
    options: DocumentOptions | None = None,
    *,
    name: str | None = None,
) -> Document:
    """Open a PDF or image from a path or bytes; the type comes from the content.

    Args:
        source: a file path, or the file's bytes.
        options: page selection, DPI, pixel caps, password.
        name: how messages name the input (defaults to the path, or ``<bytes>``).

    Raises:
        DocumentError: the input cannot be opened, with a message that says what to do.
    """
    options = options or DocumentOptions()
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    data: bytes | Path
    if isinstance(source, bytes):
        data, head = source, source[:2048]
    else:
        data = Path(source)
        try:
            with data.open("rb") as fh:
                head = fh.read(2048)
        except IsADirectoryError:
            raise NotADocument(label, "is a folder: pass the files inside it") from None
        except FileNotFoundError:
            raise NotADocument(label, "no such file: check the path") from None
        except PermissionError:
            raise NotADocument(label, "permission denied: check the file's access rights") from None
    if not head:
        raise EmptyDocument(label, "the file is empty (0 bytes): re-download or re-export it")
    kind = sniff(head)
    if kind == "pdf":
        handle, repaired = pdf.open_pdf(data, label, options.password)
        notes = ["damaged PDF repaired with qpdf"] if repaired else []
        if len(handle) == 0:
            handle.close()
            raise CorruptDocument(label, "the PDF has no pages")
        return Document(label, "pdf", handle, options, notes)
    if kind == "html":
        raise NotADocument(
            label,
            "not a document: it is an HTML page (an error page saved under a document's "
            "name?); download the file again",
        )
    if kind == "text":
        raise NotADocument(label, "not a document: it is plain text, not a PDF or an image")
    fp = data if isinstance(data, bytes) else data.open("rb")
    try:
        handle = images.open_image(fp, label)
    except DocumentError:
        if not isinstance(fp, bytes):
            fp.close()
        if kind == "unknown":
            raise NotADocument(
                label,
                "unsupported file type: dotsocr reads PDF, PNG, JPEG, WebP, BMP, GIF and TIFF",
            ) from None
        raise
    return Document(label, "image", handle, options, [])
