"""Input handling on files made in the test: formats, colour modes, limits, laziness."""

from __future__ import annotations

import gc
import io
import weakref
from pathlib import Path

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from pikepdf import Name
from PIL import Image, PngImagePlugin

from dotsocr.document import DocumentOptions, Page, PageFailure, open_document
from dotsocr.document.sources import expand_paths
from dotsocr.errors import CorruptDocument, DocumentTooLarge, NotADocument

DATA_DIR = Path(__file__).parent / "data"


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def pages_of(data: bytes, **options) -> list[Page | PageFailure]:
    with open_document(data, DocumentOptions(**options), name="test-input") as doc:
        return list(doc.pages())


def single(data: bytes, **options) -> Page:
    (page,) = pages_of(data, **options)
    assert isinstance(page, Page), page
    return page


def pixel(page: Page, xy=(0, 0)) -> tuple[int, int, int]:
    return page.image.getpixel(xy)


def test_transparent_png_is_flattened_on_white():
    image = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (10, 10, 20, 20))
    page = single(encode(image, "PNG"))
    assert page.image.mode == "RGB"
    assert pixel(page) == (255, 255, 255)
    assert pixel(page, (15, 15)) == (0, 0, 0)


def test_palette_with_transparency_is_flattened_on_white():
    image = Image.new("P", (20, 20), 0)
    image.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 10, 20))
    page = single(encode(image, "PNG", transparency=0))
    assert pixel(page, (5, 5)) == (200, 0, 0)
    assert pixel(page, (15, 5)) == (255, 255, 255)


def test_gif_reads_its_first_frame_only():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    page = single(data)
    r, _, b = pixel(page)
    assert r > 200 and b < 50


def test_multi_page_tiff_and_page_selection():
    frames = [Image.new("L", (30 + i, 20), 40 * i) for i in range(4)]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    pages = pages_of(data, pages="2,4")
    assert [(p.index, p.width) for p in pages] == [(1, 31), (3, 33)]


@pytest.mark.parametrize("fmt", ["BMP", "WEBP", "JPEG"])
def test_common_formats(fmt):
    page = single(encode(Image.new("RGB", (50, 40), (10, 200, 30)), fmt))
    assert (page.width, page.height) == (50, 40)


def grey_page(array: np.ndarray, mode: str) -> np.ndarray:
    page = single(encode(Image.fromarray(array, mode), "TIFF"))
    return np.asarray(page.image.convert("L"), dtype=float)


def test_16_bit_data_in_32_bit_grey_keeps_its_full_scale():
    array = np.full((32, 32), 32768, dtype=np.int32)  # mid-grey in 16 bits
    assert grey_page(array, "I").mean() == pytest.approx(127.5, abs=1)  # clipping gives 255


def test_float_grey_in_0_to_1_is_scaled_by_255():
    array = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    assert grey_page(array, "F").mean() == pytest.approx(127.5, abs=2)  # clipping gives ~0


def test_signed_grey_is_stretched_from_its_minimum():
    array = np.linspace(-1000, 1000, 64 * 64).reshape(64, 64).astype(np.int32)
    values = grey_page(array, "I")
    assert values.min() <= 1 and values.max() >= 254 and values.mean() == pytest.approx(127, abs=3)


def test_large_images_are_downscaled_to_the_pixel_cap_keeping_the_frame():
    image = Image.new("1", (6000, 4000), 1)
    page = single(encode(image, "PNG"), max_pixels=1_000_000)
    assert (page.width, page.height) == (6000, 4000)  # results stay in source pixels
    assert page.image.width * page.image.height <= 1_000_000
    assert page.image.width / page.image.height == pytest.approx(1.5, rel=0.01)
    assert any(note.startswith("downscaled from 6000x4000") for note in page.notes)


def test_no_pixel_cap_keeps_full_size():
    page = single(encode(Image.new("L", (4000, 3000), 255), "PNG"), max_pixels=None)
    assert page.image.size == (4000, 3000)


def test_decompression_bomb_limit_is_configurable():
    data = encode(Image.new("L", (300, 300), 255), "PNG")
    with pytest.raises(
        DocumentTooLarge, match=r"image is 300x300 \(90,000 pixels\), above the limit"
    ):
        pages_of(data, max_image_pixels=50_000)
    assert isinstance(single(data, max_image_pixels=100_000), Page)


def test_a_later_tiff_page_over_the_limit_fails_alone():
    frames = [Image.new("L", (100, 100), 255), Image.new("L", (400, 400), 255)]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    first, second = pages_of(data, max_image_pixels=50_000)
    assert isinstance(first, Page)
    assert isinstance(second, PageFailure) and "400x400" in str(second.error)


def test_unsupported_image_format_is_named():
    data = encode(Image.new("RGB", (16, 16)), "ICO")
    with pytest.raises(NotADocument, match="test-input: unsupported"):
        open_document(data, name="test-input")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"PK\x03\x04\x14\x00\x00\x00" + bytes(200), "unsupported file type"),
        (b"Name,Amount\nAlice,3\n", "plain text"),
        (b"\xef\xbb\xbf\n  <!DOCTYPE html><html><body>502</body></html>", "HTML page"),
    ],
)
def test_non_documents_are_refused_with_a_reason(data, fragment):
    with pytest.raises(NotADocument, match=fragment):
        open_document(data)


def test_missing_file_and_folder_are_clear_errors(tmp_path):
    with pytest.raises(NotADocument, match="no such file"):
        open_document(tmp_path / "nope.pdf")
    with pytest.raises(NotADocument, match="is a folder"):
        open_document(tmp_path)


def test_folders_expand_to_document_files_in_order(tmp_path):
    for name in ("b.pdf", "a.PNG", "notes.txt", ".hidden.png", "sub/c.tiff", ".git/d.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    named = tmp_path / "notes.txt"
    found = [p.relative_to(tmp_path).as_posix() for p in expand_paths([tmp_path, named])]
    assert found == ["a.PNG", "b.pdf", "sub/c.tiff", "notes.txt"]


def make_pdf(pages: int, *, broken: set[int] = frozenset()) -> bytes:
    """A PDF of blank pages; pages in ``broken`` get an absurd page box."""
    pdf = pdfium.PdfDocument.new()
    for _ in range(pages):
        pdf.new_page(200, 100)
    buffer = io.BytesIO()
    pdf.save(buffer)
    with pikepdf.open(io.BytesIO(buffer.getvalue())) as fixed:
        for index in broken:
            fixed.pages[index].MediaBox = [0, 0, 200, 2**31 - 1]
        out = io.BytesIO()
        fixed.save(out)
    return out.getvalue()


def form_pdf() -> bytes:
    """A PDF whose only content is a filled text field with no appearance stream."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(200, 100))
    helvetica = pdf.make_indirect(
        pikepdf.Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica)
    )
    field = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=Name.Annot,
            Subtype=Name.Widget,
            FT=Name.Tx,
            T=pikepdf.String("name"),
            V=pikepdf.String("HELLO FORM"),
            Rect=[10, 30, 190, 70],
            DA=pikepdf.String("/Helv 24 Tf 0 g"),
            F=4,
            P=pdf.pages[0].obj,
        )
    )
    pdf.pages[0].obj.Annots = pikepdf.Array([field])
    pdf.Root.AcroForm = pikepdf.Dictionary(
        Fields=[field],
        NeedAppearances=True,
        DR=pikepdf.Dictionary(Font=pikepdf.Dictionary(Helv=helvetica)),
    )
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def test_filled_form_fields_are_drawn():
    page = single(form_pdf())
    assert np.asarray(page.image.convert("L")).min() < 64  # the field's text is on the page


def test_truncated_image_header_is_a_clear_error():
    data = encode(Image.new("RGB", (50, 40), "red"), "PNG")[:20]
    with pytest.raises(CorruptDocument, match="test-input: the image cannot be decoded"):
        open_document(data, name="test-input")


def test_png_quoting_pdf_in_its_metadata_is_still_a_png():
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "%PDF-1.7 was the source")
    page = single(encode(Image.new("RGB", (30, 20), "white"), "PNG", pnginfo=info))
    assert (page.width, page.height, page.dpi) == (30, 20, None)


def test_unrepairable_pdf_is_one_clear_line():
    data = (DATA_DIR / "multi_page.pdf").read_bytes()[:3000]  # the header survives, little else
    with pytest.raises(CorruptDocument) as info:
        open_document(data, name="cut.pdf")
    message = str(info.value)
    assert message.startswith("cut.pdf: truncated or corrupt PDF (Data format error; qpdf could")
    assert message.endswith("re-download or re-export it") and "object at 0x" not in message


def test_pdf_without_pages_says_so():
    out = io.BytesIO()
    pikepdf.new().save(out)
    with pytest.raises(CorruptDocument, match="test-input: the PDF has no pages"):
        open_document(out.getvalue(), name="test-input")


def test_one_unreadable_page_costs_only_that_page():
    pages = pages_of(make_pdf(3, broken={1}))
    assert [type(p).__name__ for p in pages] == ["Page", "PageFailure", "Page"]
    assert "page 2 has an absurd size" in str(pages[1].error)


def test_a_500_page_pdf_holds_one_rendered_page_at_a_time():
    data = make_pdf(500)
    alive: list[weakref.ref] = []
    most_alive = 0
    with open_document(data, DocumentOptions(dpi=72)) as doc:
        assert doc.page_count == 500
        for page in doc.pages():
            alive.append(weakref.ref(page.image))
            gc.collect()
            most_alive = max(most_alive, sum(ref() is not None for ref in alive))
            del page
    assert len(alive) == 500
    assert most_alive == 1  # nothing rendered ahead, nothing kept behind


def test_pdf_pages_render_from_many_threads_at_once(data):
    """PDFium is not thread-safe; the gateway renders pages from many threads."""
    from concurrent.futures import ThreadPoolExecutor

    from dotsocr.document import DocumentOptions, Page, open_document

    def render(n: int) -> tuple[int, int]:
        with open_document(data / "multi_page.pdf", DocumentOptions(pages=str(n % 5 + 1))) as doc:
            page = next(doc.pages())
        assert isinstance(page, Page), page
        return page.image.size

    with ThreadPoolExecutor(16) as pool:
        sizes = list(pool.map(render, range(160)))
    assert len(set(sizes)) == 1 and len(sizes) == 160
