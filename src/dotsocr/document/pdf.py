"""Opening and rendering PDFs with PDFium, repairing damaged files with qpdf (pikepdf)."""

from __future__ import annotations

import contextlib
import io
import math
import threading
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from dotsocr.document.encoding import grey_channel
from dotsocr.errors import CorruptDocument, DocumentTooLarge, PasswordError

POINTS_PER_INCH = 72.0
MAX_PAGE_POINTS = 144_000.0
"""Ten times the 200-inch page side the PDF spec allows: anything larger is a broken box."""

_PDFIUM_PASSWORD_ERROR = 4

LOCK = threading.RLock()
"""PDFium is not thread-safe: every call into it, from any thread, holds this lock
(seen: 16 threads rendering pages of one PDF failed half of them, and later opens too)."""


def open_pdf(
    data: bytes | Path, source: str, password: str | None
) -> tuple[pdfium.PdfDocument, bool]:
    """Open a PDF, repairing it through qpdf when PDFium refuses it.

    Returns the document and whether it needed repair. An empty user password opens
    silently, as viewers do, even when a password was given for other files.
    """
    with LOCK:
        return _open_pdf(data, source, password)


def _open_pdf(
    data: bytes | Path, source: str, password: str | None
) -> tuple[pdfium.PdfDocument, bool]:
    try:
        document, repaired = _open(data, password), False
    except pdfium.PdfiumError as exc:
        document = None
        if getattr(exc, "err_code", None) == _PDFIUM_PASSWORD_ERROR and password is not None:
            with contextlib.suppress(pdfium.PdfiumError):
                document, repaired = _open(data, None), False
        if document is None:
            # PDFium's error code can be stale, so qpdf decides between a password
            # problem and damage, and repairs the latter.
            document, repaired = _open_repaired(data, source, password, str(exc)), True
    if len(document) == 0:
        document.close()
        raise _no_pages(source)
    return document, repaired


def _no_pages(source: str) -> CorruptDocument:
    return CorruptDocument(source, "the PDF has no pages: there is nothing to read")


def _needs_password(source: str) -> PasswordError:
    return PasswordError(source, "the PDF is encrypted: pass its password with --password")


def _open(data: bytes | Path, password: str | None) -> pdfium.PdfDocument:
    document = pdfium.PdfDocument(data, password=password)
    document.init_forms()  # so that filled-in form fields are drawn
    return document


def _open_repaired(
    data: bytes | Path, source: str, password: str | None, reason: str
) -> pdfium.PdfDocument:
    import pikepdf  # only damaged files pay for the import

    try:
        with pikepdf.open(
            io.BytesIO(data) if isinstance(data, bytes) else data, password=password or ""
        ) as damaged:
            pages = len(damaged.pages)
            out = io.BytesIO()
            damaged.save(out)  # decrypted and with a rebuilt cross-reference table
    except pikepdf.PasswordError:
        if password is None:
            raise _needs_password(source) from None
        raise PasswordError(
            source, "wrong password for this encrypted PDF: check --password"
        ) from None
    except Exception as exc:  # qpdf's errors come in several types; all mean "cannot repair"
        # Keep the gist of each library's complaint, not the objects it names.
        pdfium_says = reason.rpartition("PDFium: ")[2].rstrip(").")
        qpdf_says = str(exc).rpartition(": ")[2]
        raise CorruptDocument(
            source,
            f"truncated or corrupt PDF ({pdfium_says}; qpdf could not repair it: {qpdf_says}): "
            "re-download or re-export it",
        ) from None
    if pages == 0:
        raise _no_pages(source)  # PDFium refuses such files outright
    try:
        return _open(out.getvalue(), password)
    except pdfium.PdfiumError as exc:
        raise CorruptDocument(source, f"damaged PDF that could not be repaired ({exc})") from None


def render_scale(
    size_pt: tuple[float, float], dpi: float, max_pixels: int | None, source: str, number: int
) -> float:
    """The render scale (pixels per point): ``dpi``, or less if the page would exceed max_pixels.

    Large pages keep as much resolution as the pixel budget allows, rather than dropping
    to a fixed low DPI.
    """
    width, height = size_pt
    if not (1.0 <= width <= MAX_PAGE_POINTS and 1.0 <= height <= MAX_PAGE_POINTS):
        raise DocumentTooLarge(
            source,
            f"page {number} has an absurd size ({width:g} x {height:g} pt): the file's page "
            "box is broken; fix or re-export the PDF",
        )
    scale = dpi / POINTS_PER_INCH
    if max_pixels and _pixels(size_pt, scale) > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
        while _pixels(size_pt, scale) > max_pixels:
            scale *= 0.999
    return scale


def _pixels(size_pt: tuple[float, float], scale: float) -> int:
    return math.ceil(size_pt[0] * scale) * math.ceil(size_pt[1] * scale)


def render(page: pdfium.PdfPage, size: tuple[int, int], compact: bool = False) -> Image.Image:
    """The page drawn into exactly ``size`` pixels, annotations and form fields included.

    PDFium scales the page to any bitmap, so a page meant for a model is drawn at the
    model's size in one pass, with no resize after. ``compact``: a page with no colour
    comes back as one-channel grey (``encoding.compact``), else as RGB.
    """
    width, height = size
    bitmap = pdfium.PdfBitmap.new_native(width, height, pdfium_c.FPDFBitmap_BGR)
    bitmap.fill_rect((255, 255, 255, 255), 0, 0, width, height)
    where = (0, 0, width, height, 0, pdfium_c.FPDF_ANNOT)
    pdfium_c.FPDF_RenderPageBitmap(bitmap, page, *where)
    if page.formenv:  # filled-in form fields, drawn as viewers draw them
        pdfium_c.FPDF_FFLDraw(page.formenv, bitmap, page, *where)
    grey = grey_channel(bitmap.to_numpy()) if compact else None
    return Image.fromarray(grey) if grey is not None else bitmap.to_pil()
