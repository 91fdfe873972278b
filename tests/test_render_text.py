from dotsocr.layout import Cell, DocumentResult, PageResult
from dotsocr.render import render_text
from dotsocr.render.text import table_rows


def cell(category: str, value: str | None = None) -> Cell:
    return Cell(bbox=(0, 0, 10, 10), category=category, text=value)


def plain(*cells: Cell, **kw) -> str:
    page = PageResult(index=0, width=10, height=10, cells=list(cells))
    return render_text(DocumentResult(source="x.png", pages=[page]), **kw)


def test_heading_markers_and_emphasis_are_stripped():
    out = plain(
        cell("Title", "# Big title"),
        cell("Section-header", "## Part **one**"),
        cell("Text", "Some **bold** and `code` words."),
    )
    assert out == "Big title\n\nPart one\n\nSome bold and code words.\n"


def test_list_bullets_become_dashes_and_keep_indentation():
    assert plain(cell("List-item", "* first\n  + nested\n- third")) == (
        "- first\n  - nested\n- third\n"
    )


def test_hash_inside_text_is_kept():
    assert plain(cell("Text", "Item #3 of #5")) == "Item #3 of #5\n"


def test_table_html_becomes_tab_separated_rows():
    html = (
        "<table><thead><tr><th>Name</th><th>Score</th></tr></thead>"
        "<tbody><tr><td>Ann</td><td>9</td></tr><tr><td>Bob <b>B.</b></td><td>7</td></tr>"
        "</tbody></table>"
    )
    assert plain(cell("Table", html)) == "Name\tScore\nAnn\t9\nBob B.\t7\n"


def test_spanned_table_cells_are_emitted_once():
    html = (
        '<table><tr><td rowspan="2">A</td><td>1</td></tr><tr><td>2</td></tr>'
        '<tr><td colspan="2">wide &amp; tall</td></tr></table>'
    )
    assert table_rows(html) == [["A", "1"], ["2"], ["wide & tall"]]


def test_table_rows_tolerate_missing_end_tags_and_line_breaks():
    assert table_rows("<table><tr><td>a<br>b<td>c<tr><td>d") == [["a b", "c"], ["d"]]


def test_formula_keeps_raw_latex_without_wrapper():
    assert plain(cell("Formula", "$$\n\\frac{a}{b}\n$$"), cell("Formula", "\\[x\\]")) == (
        "\\frac{a}{b}\n\nx\n"
    )


def test_names_with_underscores_keep_them_and_emphasis_goes():
    line = "Call __init__ or my__var__x, then **done** and `x`."
    assert plain(cell("Text", line)) == "Call __init__ or my__var__x, then done and x.\n"


def test_table_text_that_is_not_html_is_kept():
    assert plain(cell("Table", "| a | b |\n| 1 | 2 |")) == "| a | b |\n| 1 | 2 |\n"


def test_table_caption_comes_first():
    html = "<table><caption>Totals</caption><tr><td>a</td><td>1</td></tr></table>"
    assert plain(cell("Table", html)) == "Totals\na\t1\n"


def test_pictures_left_out_and_furniture_optional():
    cells = (
        cell("Page-header", "Head"),
        cell("Picture"),
        cell("Picture", "fig"),
        cell("Text", "b"),
    )
    assert plain(*cells) == "b\n"
    assert plain(*cells, include_furniture=True) == "Head\n\nb\n"


def test_empty_document_gives_empty_string():
    assert render_text(DocumentResult(source="x.png")) == ""
    assert plain(cell("Text", " "), cell("Table", "<table></table>")) == ""
