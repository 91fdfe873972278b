"""Opening and rendering PDFs with PDFium, repairing damaged files with qpdf (pikepdf)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pypdfium2 as pdfium

from dotsocr.errors import CorruptDocument, DocumentTooLarge, PasswordError

POINTS_PER_INCH = 72.0
MAX_PAGE_POINTS = 144_000.0
"""Ten times the 200-inch page side the PDF spec allows: anything larger is a broken box."""

_PDFIUM_PASSWORD_ERROR = 4


def open_pdf(
    data: bytes | Path, source: str, password: str | None
) -> tuple[pdfium.PdfDocument, bool]:
    """Open a PDF, repairing it through qpdf when PDFium refuses it.

    Returns the document and whether it needed repair. An empty user password opens
    silently, as viewers do.
    """
    try:
        return pdfium.PdfDocument(data, password=password), False
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == _PDFIUM_PASSWORD_ERROR:
            raise _password_error(source, password) from None
        reason = str(exc)
    repaired = _repair(data, source, password, reason)
    try:
        return pdfium.PdfDocument(repaired, password=password), True
    except pdfium.PdfiumError as exc:
        raise CorruptDocument(source, f"damaged PDF that could not be repaired ({exc})") from None


def _password_error(source: str, password: str | None) -> PasswordError:
    if password is None:
        return PasswordError(source, "the PDF is encrypted: pass its password with --password")
    return PasswordError(source, "wrong password for this encrypted PDF: check --password")


def _repair(data: bytes | Path, source: str, password: str | None, reason: str) -> bytes:
    import pikepdf  # only damaged files pay for the import

    try:
        with pikepdf.open(
            io.BytesIO(data) if isinstance(data, bytes) else data, password=password or ""
        ) as pdf:
            if len(pdf.pages) == 0:
                raise CorruptDocument(source, "the PDF has no pages left after repair")
            out = io.BytesIO()
            pdf.save(out)
            return out.getvalue()
    except pikepdf.PasswordError:
        raise _password_error(source, password) from None
    except (pikepdf.PdfError, OSError, RuntimeError) as exc:
        raise CorruptDocument(
            source,
            f"truncated or corrupt PDF ({reason.rstrip('.')}; repair failed: {exc}): "
            "re-download or re-export it",
        ) from None


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
