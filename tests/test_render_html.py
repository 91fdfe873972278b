from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from dotsocr.layout import Cell, DocumentResult, PageResult, PageStatus
from dotsocr.render import render_markdown
from dotsocr.render.html import markdown_html

ALLOWED_TAGS = {
    *("p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "code", "em"),
    *("strong", "b", "i", "u", "s", "del", "sub", "sup", "br", "hr", "a", "img", "table", "thead"),
    *("tbody", "tfoot", "tr", "th", "td", "caption", "colgroup", "col", "span", "div", "math"),
    *("mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "mfrac"),
    *("msqrt", "mroot", "mover", "munder", "munderover", "mtable", "mtr", "mtd", "mstyle"),
    *("mpadded", "mphantom", "menclose"),
}
MATH_TAGS = {tag for tag in ALLOWED_TAGS if tag.startswith("m")}
HREF_OK = re.compile(r"(https?:|mailto:)", re.IGNORECASE)
SRC_OK = re.compile(r"data:image/(png|jpeg|webp)[;,]", re.IGNORECASE)


class Tree(HTMLParser):
    """Every start tag (name, attributes), comment and piece of text in an HTML fragment."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.comments: list[str] = []
        self.texts: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "img":  # shown in place of a picture that is not there
            self.texts.append(dict(attrs).get("alt") or "")

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def text(self) -> str:
        return "".join(self.texts)


def assert_safe(html: str) -> Tree:
    tree = Tree(html)
    assert not tree.comments
    for tag, attrs in tree.tags:
        assert tag in ALLOWED_TAGS, (tag, html)
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, html)
            assert name not in ("style", "xlink:href", "srcset", "formaction", "target"), html
            if name == "href":
                assert tag == "a" and HREF_OK.match(value or ""), (tag, value, html)
            if name == "src":
                assert tag == "img" and SRC_OK.match(value or ""), (tag, value, html)
            if name == "class":  # nh3 leaves class="" where it removed every class
                assert (tag, value) in {
                    ("div", ""),
                    ("div", "math-display"),
                    ("div", "table-wrap"),
                    ("code", "latex"),
                }, html
        if tag in MATH_TAGS:
            assert "href" not in attrs, html
        if tag == "a":
            assert attrs.get("rel") == "noopener noreferrer", html
    return tree


def test_empty_and_blank_text_give_empty_string():
    assert markdown_html("") == ""
    assert markdown_html(" \n\t\n") == ""


def test_headings_and_paragraphs():
    tree = assert_safe(markdown_html("# Title\n\n## Part\n\nSome *body* text.\n\nMore.\n"))
    assert [tag for tag, _ in tree.tags] == ["h1", "h2", "p", "em", "p"]
    assert "Title" in tree.text and "Some body text." in tree.text


def test_pipe_table_becomes_wrapped_table_with_alignment():
    html = markdown_html("| Item | Cost |\n|:--|--:|\n| Tea | 3 |\n| Total | 3 |\n")
    tree = assert_safe(html)
    assert html.startswith('<div class="table-wrap"><table>')
    assert html.rstrip().endswith("</table>\n</div>")
    assert len(tree.named("td")) == 4
    assert [attrs.get("align") for attrs in tree.named("th")] == ["left", "right"]
    assert "Total" in tree.text


def test_html_table_keeps_spans_and_is_wrapped():
    table = (
        "<table><thead><tr><th rowspan=2>Year</th><th colspan='2'>Sales</th></tr>"
        "<tr><th>Q1</th><th>Q2</th></tr></thead>"
        "<tbody><tr><td>2024</td><td>1<sup>a</sup></td><td>2<br>3</td></tr></tbody></table>"
    )
    html = markdown_html(f"Before.\n\n{table}\n\nAfter.\n")
    tree = assert_safe(html)
    assert tree.named("th")[0] == {"rowspan": "2"}
    assert tree.named("th")[1] == {"colspan": "2"}
    assert tree.named("div") == [{"class": "table-wrap"}]
    assert html.index('<div class="table-wrap">') < html.index("<table>")
    assert html.index("</table></div>") < html.index("After.")
    assert {"sup", "br", "thead", "tbody"} <= {tag for tag, _ in tree.tags}


def test_display_formula_becomes_block_mathml_in_a_wrapper():
    html = markdown_html("$$\n\\frac{a}{b}\n$$\n")
    tree = assert_safe(html)
    assert tree.named("div") == [{"class": "math-display"}]
    assert tree.named("math")[0]["display"] == "block"
    assert "mfrac" in [tag for tag, _ in tree.tags]


@pytest.mark.parametrize(("text", "tag"), [("$x^2$", "msup"), ("\\(x_i\\)", "msub")])
def test_inline_formulas_become_inline_mathml(text: str, tag: str):
    tree = assert_safe(markdown_html(f"So {text} holds.\n"))
    tags = [name for name, _ in tree.tags]
    assert tags[:2] == ["p", "math"] and tag in tags
    assert tree.named("math")[0]["display"] == "inline"
    assert not tree.named("div")


def test_bracket_display_formula():
    tree = assert_safe(markdown_html("\\[\n\\sqrt{2}\n\\]\n"))
    assert tree.named("math")[0]["display"] == "block"
    assert "msqrt" in [tag for tag, _ in tree.tags]


def test_formula_latex2mathml_rejects_is_shown_as_escaped_code():
    # latex2mathml raises ExtraLeftOrMissingRightError on an unclosed \left.
    html = markdown_html("$$\n\\left( x < y\n$$\n\nand $x_1_2$ too\n")
    tree = assert_safe(html)
    assert '<code class="latex">\\left( x &lt; y</code>' in html
    assert [attrs for attrs in tree.named("code")] == [{"class": "latex"}] * 2
    assert not tree.named("math")
    assert "\\left( x < y" in tree.text and "x_1_2" in tree.text


def test_text_in_a_formula_stays_text():
    tree = assert_safe(markdown_html("$\\text{a<b> & <script>alert(1)</script>}$"))
    assert [tag for tag, _ in tree.tags] == ["p", "math", "mrow", "mtext"]
    assert "<script>alert(1)</script>" in tree.text


def test_inline_picture_kept_and_links_get_rel():
    png = "data:image/png;base64,iVBORw0KGgo="
    tree = assert_safe(markdown_html(f"![Picture]({png})\n\n[site](https://example.org)\n"))
    assert tree.named("img") == [{"src": png, "alt": "Picture"}]
    assert tree.named("a")[0]["href"] == "https://example.org"


XSS = [
    "<script>alert(1)</script>Total",
    "<img src=x onerror=alert(1)>Total",
    '<img src="https://evil.example/t.png">Total',
    '<img src="//evil.example/t.png">Total',
    "![Total](https://evil.example/t.png)",
    "[Total](javascript:alert(1))",
    '<a href="javascript:alert(1)">Total</a>',
    '<a href="jAvAsCrIpT:alert(1)">Total</a>',
    '<a href="java&#x09;script:alert(1)">Total</a>',
    '<a href=" javascript:alert(1)">Total</a>',
    '<a href="data:text/html,<script>alert(1)</script>">Total</a>',
    "[Total](data:image/png;base64,AAAA)",
    '<a href="vbscript:msgbox(1)">Total</a>',
    '<iframe src="https://evil.example"></iframe>Total',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>Total',
    "<style>body{display:none}</style>Total",
    '<p style="position:fixed;inset:0">Total</p>',
    "<svg onload=alert(1)><circle r=9 /></svg>Total",
    '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>Total',
    '<math><mi href="javascript:alert(1)">Total</mi></math>',
    '<math><a href="javascript:alert(1)">x</a></math>Total',
    '<math xlink:href="javascript:alert(1)"><mi>Total</mi></math>',
    '<math><maction actiontype="statusline"><mi>Total</mi><mtext>x</mtext></maction></math>',
    "Total<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "$\\href{javascript:alert(1)}{Total}$",
    "$\\style{color:red}{\\text{Total}}$ $\\class{evil}{x}$",
    '<table><tr><td onmouseover="alert(1)">Total</td></tr></table>',
    '<table><tr><td><img src=x onerror="alert(1)">Total</td></tr></table>',
    "<!-- --><img src=x onerror=alert(1)> -->Total",
    "<!--<img src=--><img src=x onerror=alert(1)//>Total",
    '<div class="evil" id="x" onclick="alert(1)">Total</div>',
    "<form action=https://evil.example><input autofocus onfocus=alert(1)></form>Total",
    '<object data="data:text/html,x"></object><embed src="https://evil.example">Total',
    '<base href="https://evil.example/">Total',
    '<meta http-equiv="refresh" content="0;url=https://evil.example">Total',
    '<link rel="stylesheet" href="https://evil.example/x.css">Total',
    '<details open ontoggle="alert(1)"><summary>Total</summary></details>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">Total',
    '<a href="https://example.org" target="_blank">Total</a>',
]


@pytest.mark.parametrize("text", XSS)
def test_untrusted_markup_is_sanitized_and_text_survives(text: str):
    tree = assert_safe(markdown_html(f"Intro.\n\n{text}\n"))
    assert "Total" in tree.text
    assert "Intro." in tree.text


def test_document_rendered_as_markdown_then_html():
    table = '<table><tr><td colspan="2">Total</td></tr><tr><td>1</td><td>2</td></tr></table>'
    page = PageResult(
        index=0,
        width=100,
        height=200,
        cells=[
            Cell(bbox=(0, 0, 10, 10), category="Title", text="Annual report"),
            Cell(bbox=(0, 10, 10, 20), category="Text", text="Growth was $g^2$."),
            Cell(bbox=(0, 20, 10, 30), category="Formula", text="E = \\frac{m}{c}"),
            Cell(bbox=(0, 30, 10, 40), category="Table", text=table),
            Cell(bbox=(0, 40, 10, 50), category="Picture"),
        ],
    )
    failed = PageResult(index=1, width=100, height=200, status=PageStatus.FAILED, error="boom")
    doc = DocumentResult(source="test.pdf", pages=[page, failed])
    markdown = render_markdown(doc, pictures="omit").text
    assert "$$\nE = \\frac{m}{c}\n$$" in markdown and "<!--" in markdown
    tree = assert_safe(markdown_html(markdown))
    tags = [tag for tag, _ in tree.tags]
    assert tags[0] == "h1" and "Annual report" in tree.text
    assert [attrs["display"] for attrs in tree.named("math")] == ["inline", "block"]
    assert "mfrac" in tags and "msup" in tags
    assert tree.named("td")[0] == {"colspan": "2"}
    assert tree.named("div") == [{"class": "math-display"}, {"class": "table-wrap"}]
    assert "failed" not in tree.text and "boom" not in tree.text
