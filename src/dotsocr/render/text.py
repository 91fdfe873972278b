"""Plain text from page results: no Markdown markers, tables as tab-separated rows."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from dotsocr.layout import FURNITURE, Cell, DocumentResult
from dotsocr.render._common import join_blocks, strip_math, trim_block

_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+|$)")
_BULLET = re.compile(r"^(\s*)[*+-][ \t]+")
# **strong** and `code`; dots.ocr writes bold with asterisks, so underscores are left
# alone (they are more often part of names such as __init__ than markup).
_EMPHASIS = re.compile(r"\*\*(.+?)\*\*|`([^`]*)`")
_TAG = re.compile(r"<[^>]+>")


def render_text(doc: DocumentResult, *, include_furniture: bool = False) -> str:
    """Render a document as plain text, one blank line between cells and pages.

    Pictures are left out, formulas keep their LaTeX, tables become one line per
    row with tab-separated cells. Ends with one newline ('' when there is no text).
    """
    blocks: list[str] = []
    for page in doc.pages:
        for cell in page.cells:
            if cell.category in FURNITURE and not include_furniture:
                continue
            blocks.append(_cell_text(cell))
    return join_blocks(blocks)


def _cell_text(cell: Cell) -> str:
    text = trim_block(cell.text or "")
    if cell.category == "Picture" or not text.strip():
        return ""
    if cell.category == "Formula":
        return strip_math(text)
    if cell.category == "Table":
        rows = table_rows(text)
        if not rows:  # not HTML after all: keep its words rather than lose them
            return "\n".join(" ".join(_TAG.sub(" ", line).split()) for line in text.splitlines())
        return "\n".join("\t".join(row) for row in rows)
    return "\n".join(_plain_line(line) for line in text.splitlines())


def _plain_line(line: str) -> str:
    line = _HEADING.sub("", line)
    line = _BULLET.sub(r"\1- ", line)
    return _EMPHASIS.sub(lambda m: next(g for g in m.groups() if g is not None), line)


def table_rows(html: str) -> list[list[str]]:
    """The rows of an HTML table as lists of cell texts; spanned cells appear once.

    Text outside any cell (a caption) comes first, as a row of its own.
    """
    parser = _TableParser()
    parser.feed(html)
    parser.close()
    loose = " ".join("".join(parser.loose).split())
    if loose and parser.rows:
        return [[loose], *parser.rows]
    return parser.rows


class _TableParser(HTMLParser):
    """Collects ``<tr>`` rows of ``<td>``/``<th>`` text; tolerant of missing end tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.loose: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._end_row()
            self._row = []
        elif tag in ("td", "th"):
            self._end_cell()
            if self._row is None:
                self._row = []
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._end_cell()
        elif tag in ("tr", "table", "thead", "tbody", "tfoot"):
            self._end_row()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        else:
            self.loose.append(data)

    def close(self) -> None:
        super().close()
        self._end_row()

    def _end_cell(self) -> None:
        if self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
        self._cell = None

    def _end_row(self) -> None:
        self._end_cell()
        if self._row:
            self.rows.append(self._row)
        self._row = None
