"""Inputs to page images: open a path or bytes, then iterate its pages lazily.

>>> with open_document("scan.pdf", DocumentOptions(pages="1-3")) as doc:
...     for page in doc.pages():
...         ...  # a Page (its image and frame size), or a PageFailure for that page
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pypdfium2 as pdfium
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from dotsocr import defaults
from dotsocr.document import encoding, images, pdf, textlayer
from dotsocr.document.selection import select_pages
from dotsocr.document.sniff import sniff
from dotsocr.document.sources import PERMISSION_DENIED, input_problem
from dotsocr.document.textlayer import TextLayer
from dotsocr.errors import (
    CorruptDocument,
    DocumentError,
    EmptyDocument,
    NotADocument,
    PageTooExtreme,
)

__all__ = [
    "Document",
    "DocumentOptions",
    "Page",
    "PageFailure",
    "SentSize",
    "open_document",
    "select_pages",
]


class DocumentOptions(BaseModel):
    """How inputs become page images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pages: Annotated[str | None, Field(description="page selection such as 1-3,7 (1-based)")] = None
    dpi: Annotated[
        float, Field(gt=0, le=1200, allow_inf_nan=False, description="PDF render resolution")
    ] = defaults.DPI
    max_pixels: Annotated[
        int | None,
        Field(
            gt=0,
            description="pixel cap per page, usually the model's budget: PDFs render at the "
            "highest DPI that fits, larger images are downscaled; None keeps full size",
        ),
    ] = None
    password: Annotated[str | None, Field(description="password of an encrypted PDF")] = None
    max_image_pixels: Annotated[
        int | None,
        Field(gt=0, description="refuse source images or renders above this many pixels"),
    ] = defaults.MAX_IMAGE_PIXELS
    text_layer: Annotated[
        bool, Field(description="also extract each PDF page's own text layer, with boxes")
    ] = False

    def within(self, max_pixels: int, text_layer: bool = False) -> DocumentOptions:
        """These options, rendering no page larger than ``max_pixels`` (a model's pixel
        budget, where it will be sent) unless a cap of their own is set, and extracting
        PDF text layers where the engine reads them."""
        update: dict[str, object] = {"text_layer": self.text_layer or text_layer}
        if self.max_pixels is None:
            update["max_pixels"] = max_pixels
        return self.model_copy(update=update)


@dataclass
class Page:
    """One page ready for a model: an upright image (RGB, or grey where it is sent grey) and
    the frame results use.

    ``width`` x ``height`` is the coordinate frame of results: the source image's
    pixels, or the PDF page at ``dpi`` (the DPI actually used, after any pixel cap).
    ``image`` is at the frame's size, at the size a model is sent it (``Document``'s
    ``sent_size``), or smaller when a large image was capped.
    """

    source: str
    index: int
    image: Image.Image
    width: int
    height: int
    dpi: float | None = None
    notes: list[str] = field(default_factory=list)
    text_layer: TextLayer | None = None  # a PDF page's own text, in the frame's pixels
    # Where the image was sized for a model (``Document``'s ``sent_size``): the size that
    # sizing started from (the frame, or a capped image's size). A lower pixel cap sizes
    # the page from it again, as if drawn under that cap.
    sized_from: tuple[int, int] | None = None

    @property
    def number(self) -> int:
        return self.index + 1


@dataclass
class PageFailure:
    """A page that could not be rendered; its document's other pages still come."""

    source: str
    index: int
    error: DocumentError

    @property
    def number(self) -> int:
        return self.index + 1


SentSize = Callable[[int, int], tuple[int, int]]
"""The (width, height) a page is sent at, given its frame's (a model's sizing)."""


class Document:
    """An opened input. Use as a context manager; ``pages()`` renders one page at a time.

    ``sent_size``: pages are for a model that takes them at this size. Each page image
    then comes at that size, drawn or resized once, in one grey channel when it has no
    colour (``encoding.compact``); without it, at the frame's size, in RGB.
    """

    def __init__(
        self,
        source: str,
        kind: Literal["pdf", "image"],
        handle: pdfium.PdfDocument | Image.Image,
        options: DocumentOptions,
        notes: list[str],
        sent_size: SentSize | None = None,
    ) -> None:
        self.source = source
        self.kind = kind
        self.options = options
        self.sent_size = sent_size
        self._handle = handle
        self._notes = notes
        if isinstance(handle, pdfium.PdfDocument):
            with pdf.LOCK:
                self.page_count = len(handle)
        else:
            with images.decoding(source, options.max_image_pixels):
                self.page_count = images.frame_count(handle)
        self.selected: list[int] = select_pages(options.pages, self.page_count, source)

    def pages(self, skip: Collection[int] = ()) -> Iterator[Page | PageFailure]:
        """Yield the selected pages in order, rendering each only when asked for; the
        indexes in ``skip`` (pages read before) are passed over."""
        for index in self.selected:
            if index not in skip:
                yield self.page(index)

    def page(self, index: int) -> Page | PageFailure:
        """Render the page at ``index`` (0-based), selected or not."""
        render = self._pdf_page if self.kind == "pdf" else self._image_page
        try:
            return render(index)
        except DocumentError as exc:
            return PageFailure(self.source, index, exc)

    def _pdf_page(self, index: int) -> Page:
        with pdf.LOCK:
            return self._render_pdf_page(index)

    def _render_pdf_page(self, index: int) -> Page:
        opts = self.options
        try:
            page = self._handle[index]  # type: ignore[index]
        except pdfium.PdfiumError as exc:
            raise CorruptDocument(self.source, f"page {index + 1} cannot be read ({exc})") from None
        try:
            size_pt = page.get_size()
            scale = pdf.render_scale(size_pt, opts.dpi, opts.max_pixels, self.source, index + 1)
            size = (math.ceil(size_pt[0] * scale), math.ceil(size_pt[1] * scale))
            images.check_pixels(size, opts.max_image_pixels, self.source, f"page {index + 1}")
            drawn = self._sending_size(*size) if self.sent_size else size
            try:
                image = pdf.render(page, drawn, compact=self.sent_size is not None)
            except pdfium.PdfiumError as exc:
                raise CorruptDocument(
                    self.source, f"page {index + 1} cannot be rendered ({exc})"
                ) from None
            layer = self._text_layer(page, scale) if opts.text_layer else None
        finally:
            page.close()
        dpi = scale * pdf.POINTS_PER_INCH
        notes = list(self._notes)
        if dpi < opts.dpi - 0.05:
            notes.append(f"rendered at {dpi:.0f} DPI to fit the {opts.max_pixels:,} pixel cap")
        sized_from = size if self.sent_size else None
        return Page(self.source, index, image, *size, round(dpi, 2), notes, layer, sized_from)

    @staticmethod
    def _text_layer(page: pdfium.PdfPage, scale: float) -> TextLayer:
        """The page's text layer; one that cannot be read says why (and is not trusted)."""
        try:
            return textlayer.extract(page, scale)
        except Exception as exc:  # PDFium's text calls fail in several ways on broken files
            return TextLayer(unreadable=f"{type(exc).__name__}: {exc}")

    def _image_page(self, index: int) -> Page:
        handle: Image.Image = self._handle  # type: ignore[assignment]
        limit = self.options.max_image_pixels
        notes = list(self._notes)
        with images.decoding(self.source, limit):
            handle.seek(index)
            # The area does not change with rotation: check it before anything decodes.
            images.check_pixels(handle.size, limit, self.source, "image")
            width, height = images.upright_size(handle)
            dpi = images.stated_dpi(handle)
            image = images.to_page_image(
                handle,
                self.source,
                max_pixels=self.options.max_pixels,
                notes=notes,
                sent_size=self._sending_size if self.sent_size else None,
            )
        sized_from = None
        if self.sent_size:
            image = encoding.compact(image)
            sized_from = images.capped_size(handle, self.options.max_pixels)
        return Page(self.source, index, image, width, height, dpi, notes, None, sized_from)

    def _sending_size(self, width: int, height: int) -> tuple[int, int]:
        """The size a page of this size is sent at, or its own where the model cannot
        take it (the pipeline then fails the page, saying why)."""
        try:
            return self.sent_size(width, height)  # type: ignore[misc]
        except PageTooExtreme:
            return width, height

    def close(self) -> None:
        if self.kind == "pdf":
            with pdf.LOCK:
                self._handle.close()
        else:
            self._handle.close()

    def __enter__(self) -> Document:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_document(
    source: str | Path | bytes,
    options: DocumentOptions | None = None,
    *,
    name: str | None = None,
    sent_size: SentSize | None = None,
) -> Document:
    """Open a PDF or image from a path or bytes; the type comes from the content.

    Args:
        source: a file path, or the file's bytes.
        options: page selection, DPI, pixel caps, password.
        name: how messages name the input (defaults to the path, or ``<bytes>``).
        sent_size: the size a model takes a page of a given frame size at (``Document``).

    Raises:
        DocumentError: the input cannot be opened, with a message that says what to do.
    """
    options = options or DocumentOptions()
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    data = source if isinstance(source, bytes) else Path(source)
    head = _head(data, label)
    kind = sniff(head)
    if kind == "html":
        raise NotADocument(
            label,
            "not a document: it is an HTML page (an error page saved under a document's "
            "name?); download the file again",
        )
    if kind == "text":
        raise NotADocument(label, "not a document: it is plain text, not a PDF or an image")
    if kind == "unknown":
        known = images.identify(data)
        raise NotADocument(
            label,
            f"unsupported image format {known}: convert it to PNG, JPEG, TIFF or PDF"
            if known
            else "unsupported file type: dotsocr reads PDF, PNG, JPEG, WebP, BMP, GIF and TIFF",
        )
    if kind == "pdf":
        handle, repaired = pdf.open_pdf(data, label, options.password)
        notes = ["damaged PDF repaired with qpdf"] if repaired else []
    else:
        handle, notes = images.open_image(data, label, options.max_image_pixels), []
    try:
        return Document(label, kind, handle, options, notes, sent_size)
    except BaseException:
        with pdf.LOCK:
            handle.close()
        raise


def _head(data: bytes | Path, label: str) -> bytes:
    head = data[:2048] if isinstance(data, bytes) else _read_head(data, label)
    if not head:
        raise EmptyDocument(label, "the file is empty (0 bytes): re-download or re-export it")
    return head


def _read_head(path: Path, label: str) -> bytes:
    """The first bytes of a regular file; a pipe, device or socket is refused, never read.

    The stat check keeps devices unopened; the non-blocking open and ``fstat`` cover a
    file swapped for a pipe after the check, so that no input can block here.
    """
    problem = input_problem(path)
    if problem:
        raise NotADocument(label, problem)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except PermissionError:
        raise NotADocument(label, PERMISSION_DENIED) from None
    except OSError as exc:
        problem = input_problem(path) or f"cannot be read ({exc.strerror}): check the path"
        raise NotADocument(label, problem) from None
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            problem = input_problem(path) or "is not a regular file: pass a PDF or image file"
            raise NotADocument(label, problem)
        try:
            return fh.read(2048)
        except OSError as exc:
            raise NotADocument(label, f"cannot be read ({exc.strerror}): check the file") from None
