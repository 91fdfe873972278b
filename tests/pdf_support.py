"""PDFs made in tests: text in PDFium's standard fonts, in any render mode, over or under
an image."""

from __future__ import annotations

import ctypes
import io

import pypdfium2 as pdfium
import pypdfium2.raw as raw
from PIL import Image


def text_pdf(
    rows: list[tuple[float, float, str]],
    mode: int = 0,
    image: Image.Image | None = None,
    under: bool = False,
    image_box: tuple[float, float, float, float] = (0, 0, 612, 792),
) -> bytes:
    """A letter page filled by ``image``, with rows of 12 pt Helvetica (x, y, text)
    drawn in render mode ``mode`` after the image (``under``: before it, so hidden),
    saved, to be read back as a file. ``image_box``: where the image goes (x, y, width,
    height in points from the bottom left)."""
    document = pdfium.PdfDocument.new()
    page = document.new_page(612, 792)
    if image is not None:
        draw_picture(document, page, image, image_box)
    font = raw.FPDFText_LoadStandardFont(document.raw, b"Helvetica")
    for x, y, text in rows:
        draw_text(document, page, font, (x, y), text, mode, under)
    return saved(document, page)


def draw_picture(
    document: pdfium.PdfDocument,
    page: pdfium.PdfPage,
    image: Image.Image,
    box: tuple[float, float, float, float],
) -> None:
    """``image`` on ``page`` at ``box`` (x, y, width, height in points from the bottom left)."""
    picture = pdfium.PdfImage.new(document)
    picture.set_bitmap(pdfium.PdfBitmap.from_pil(image))
    x, y, width, height = box
    picture.set_matrix(pdfium.PdfMatrix().scale(width, height).translate(x, y))
    page.insert_obj(picture)


def draw_text(
    document: pdfium.PdfDocument,
    page: pdfium.PdfPage,
    font,
    at: tuple[float, float],
    text: str,
    mode: int = 0,
    under: bool = False,
) -> None:
    """A row of 12 pt text in ``font`` at ``at`` (points from the bottom left), drawn in
    render mode ``mode``; ``under``: before the page's other objects."""
    obj = raw.FPDFPageObj_CreateTextObj(document.raw, font, 12.0)
    chars = ctypes.create_string_buffer((text + "\0").encode("utf-16-le"))
    raw.FPDFText_SetText(obj, ctypes.cast(chars, ctypes.POINTER(raw.FPDF_WCHAR)))
    raw.FPDFTextObj_SetTextRenderMode(obj, mode)
    raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, *at)
    if under:
        raw.FPDFPage_InsertObjectAtIndex(page.raw, obj, 0)
    else:
        raw.FPDFPage_InsertObject(page.raw, obj)


def saved(document: pdfium.PdfDocument, *pages: pdfium.PdfPage) -> bytes:
    """The document's bytes, its ``pages``' new content generated first."""
    for page in pages:
        raw.FPDFPage_GenerateContent(page.raw)
    out = io.BytesIO()
    document.save(out)
    document.close()
    return out.getvalue()
