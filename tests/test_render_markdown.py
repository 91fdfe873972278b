import base64
import io

import pytest
from PIL import Image

from dotsocr.layout import Cell, DocumentResult, PageResult, PageStatus
from dotsocr.render import RenderedMarkdown, render_markdown, to_png_bytes
from dotsocr.render.markdown import strip_math

RED = (255, 0, 0)


def cell(category: str, text: str | None = None, bbox=(0, 0, 10, 10)) -> Cell:
    return Cell(bbox=bbox, category=category, text=text)


def page(*cells: Cell, index: int = 0, **kw) -> PageResult:
    return PageResult(index=index, width=100, height=200, cells=list(cells), **kw)


def doc(*pages: PageResult) -> DocumentResult:
    return DocumentResult(source="test.pdf", pages=list(pages))


def md(*cells: Cell, **kw) -> str:
    return render_markdown(doc(page(*cells)), **kw).text


def test_cells_in_model_order_joined_by_one_blank_line():
    assert md(cell("Text", "b"), cell("List-item", "- a"), cell("Text", "c")) == "b\n\n- a\n\nc\n"


def test_pages_joined_by_blank_line_and_one_trailing_newline():
    out = render_markdown(doc(page(cell("Text", "one\n\n\n")), page(cell("Text", "two"), index=1)))
    assert out == RenderedMarkdown(text="one\n\ntwo\n", assets={})


def test_empty_document_and_empty_cells_give_empty_string():
    assert render_markdown(doc()).text == ""
    assert md(cell("Text", None), cell("Text", "  \n "), cell("Caption", "")) == ""


def test_blank_cells_are_skipped_without_extra_blank_lines():
    assert md(cell("Text", "a"), cell("Text", "   "), cell("Text", "b")) == "a\n\nb\n"


def test_furniture_left_out_by_default_and_kept_on_request():
    cells = (cell("Page-header", "Journal"), cell("Text", "body"), cell("Page-footer", "3"))
    assert md(*cells) == "body\n"
    assert md(*cells, include_furniture=True) == "Journal\n\nbody\n\n3\n"


@pytest.mark.parametrize(
    "latex",
    [
        "x^2",
        "$$x^2$$",
        "$$\nx^2\n$$",
        " $$ x^2 $$ ",
        "\\[x^2\\]",
        "\\[\nx^2\n\\]",
        "$x^2$",
        "\\(x^2\\)",
    ],
)
def test_formula_becomes_display_math_without_double_wrapping(latex):
    assert md(cell("Formula", latex)) == "$$\nx^2\n$$\n"


def test_formula_nested_wrappers_are_all_stripped():
    assert md(cell("Formula", "$$ \\[ a+b \\] $$")) == "$$\na+b\n$$\n"


def test_formula_with_several_marked_up_parts_is_kept_as_is():
    assert md(cell("Formula", "$a$ and $b$")) == "$a$ and $b$\n"


def test_formula_escaped_dollar_and_latex_line_break_are_not_wrappers():
    assert md(cell("Formula", "\\$5 \\\\[2pt] x")) == "$$\n\\$5 \\\\[2pt] x\n$$\n"


def test_strip_math_leaves_inner_text():
    assert strip_math("  \\[ \\frac{a}{b} \\]  ") == "\\frac{a}{b}"
    assert strip_math("$a$ + $b$") == "$a$ + $b$"


def test_title_and_section_header_get_heading_markers_once():
    out = md(
        cell("Title", "Main\ntitle"),
        cell("Section-header", "Methods"),
        cell("Title", "# Kept"),
        cell("Section-header", "### Deeper"),
    )
    assert out == "# Main title\n\n## Methods\n\n# Kept\n\n### Deeper\n"


def test_table_html_and_other_categories_kept_as_is():
    table = "<table><tr><td>1</td><td>2</td></tr></table>"
    out = md(
        cell("Table", table),
        cell("Caption", "*Fig. 1*"),
        cell("Footnote", "1. note"),
        cell("Odd-thing", "**x**"),
    )
    assert out == f"{table}\n\n*Fig. 1*\n\n1. note\n\n**x**\n"


def page_with_picture(index: int = 0) -> tuple[PageResult, Image.Image]:
    """Page frame 100x200; image 200x400 with the picture's area painted red."""
    picture = cell("Picture", bbox=(10, 20, 60, 120))
    image = Image.new("RGB", (200, 400), "white")
    image.paste(RED, (20, 40, 120, 240))
    return page(cell("Text", "before"), picture, index=index), image


def decode(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def test_picture_files_crop_scaled_box_and_link_with_prefix():
    p, image = page_with_picture(index=2)
    out = render_markdown(doc(p), page_images={2: image}, asset_prefix="doc_files/")
    name = "page-0003-picture-02.png"
    assert out.text == f"before\n\n![Picture](doc_files/{name})\n"
    assert list(out.assets) == [name]
    crop = decode(out.assets[name])
    assert crop.size == (100, 200)
    assert crop.getcolors() == [(100 * 200, RED)]


def test_picture_inline_embeds_png_data_uri():
    p, image = page_with_picture()
    out = render_markdown(doc(p), page_images={0: image}, pictures="inline")
    assert out.assets == {}
    prefix = "before\n\n![Picture](data:image/png;base64,"
    assert out.text.startswith(prefix) and out.text.endswith(")\n")
    crop = decode(base64.b64decode(out.text[len(prefix) : -2]))
    assert crop.size == (100, 200)


def test_picture_omit_writes_nothing():
    p, image = page_with_picture()
    out = render_markdown(doc(p), page_images={0: image}, pictures="omit")
    assert out == RenderedMarkdown(text="before\n", assets={})


def test_picture_without_page_image_writes_comment_with_box():
    p, image = page_with_picture()
    out = render_markdown(doc(p), page_images={5: image})
    assert out.text == "before\n\n<!-- Picture 10,20,60,120 -->\n"
    assert out.assets == {}


def test_failed_page_writes_comment_and_other_pages_still_render():
    pages = (
        page(cell("Text", "first")),
        page(index=1, status=PageStatus.FAILED, error="engine timed out --> retry"),
        page(cell("Text", "third"), index=2),
    )
    out = render_markdown(doc(*pages)).text
    assert out == "first\n\n<!-- page 2 failed: engine timed out - -> retry -->\n\nthird\n"


def test_unknown_picture_mode_is_refused():
    with pytest.raises(ValueError, match="pictures"):
        render_markdown(doc(), pictures="links")  # type: ignore[arg-type]


def test_to_png_bytes_converts_modes_png_cannot_hold():
    png = to_png_bytes(Image.new("CMYK", (3, 2)))
    assert png.startswith(b"\x89PNG") and decode(png).size == (3, 2)
