"""Composing a page's cells from lines and layout regions, on synthetic pages."""

from __future__ import annotations

import pytest

from dotsocr.engines import tables
from dotsocr.engines.compose import Block, compose
from dotsocr.layout import CATEGORIES
from dotsocr.text_lines import Region, TextLine

W, H = 1700, 2200
LINE, PITCH = 30.0, 38.0  # a body line's height, and from one line's top to the next's
GAP = 30.0  # between paragraphs, on top of the usual gap between lines


def line(x1: float, y1: float, x2: float, text: str, size: float = 20.0, **kw) -> TextLine:
    height = kw.pop("height", LINE * size / 20.0)
    return TextLine((x1, y1, x2, y1 + height), text, size, **kw)


def paragraph(x1: float, x2: float, top: float, texts: list[str], **kw) -> list[TextLine]:
    """Lines of one paragraph down a column; the last line shorter, as in prose."""
    last = len(texts) - 1
    return [
        line(x1, top + k * PITCH, x2 if k < last else (x1 + x2) / 2, text, **kw)
        for k, text in enumerate(texts)
    ]


def below(lines: list[TextLine]) -> float:
    """Where the next paragraph starts under these lines."""
    return max(line.bbox[3] for line in lines) + GAP


def prose(name: str, count: int = 3) -> list[str]:
    return [f"{name} line {k} of running prose and" for k in range(count - 1)] + [f"{name} ends."]


def texts(blocks: list[Block]) -> list[str | None]:
    return [block.text for block in blocks]


def categories(blocks: list[Block]) -> list[str]:
    return [block.category for block in blocks]


def two_column_page() -> list[TextLine]:
    head = [line(100, 40, 600, "Journal of Tests 12 (2026)", size=14)]
    title = [line(300, 100, 1400, "A Study of Things", size=40)]
    l1 = paragraph(100, 820, 250, prose("L1"))
    l2 = paragraph(100, 820, below(l1), prose("L2", 4))
    r1 = paragraph(880, 1600, 250, prose("R1", 5))
    r2 = paragraph(880, 1600, below(r1), prose("R2"))
    foot = [line(830, 2100, 870, "7")]
    # given in a scrambled order: the order comes from the page, not the list
    return [*r2, *foot, *l2, *title, *r1, *head, *l1]


def test_two_columns_without_regions() -> None:
    blocks = compose(two_column_page(), [], W, H)
    assert categories(blocks) == [
        "Page-header",
        "Title",
        "Text",
        "Text",
        "Text",
        "Text",
        "Page-footer",
    ]
    assert texts(blocks)[1] == "# A Study of Things"
    assert [t.split()[0] for t in texts(blocks)[2:6]] == ["L1", "L2", "R1", "R2"]
    assert texts(blocks)[2] == " ".join(prose("L1"))
    assert texts(blocks)[-1] == "7"
    assert all(block.category in CATEGORIES for block in blocks)


def test_three_columns_read_column_by_column() -> None:
    lines = []
    for x1, x2, name in ((100, 560, "A"), (620, 1080, "B"), (1140, 1600, "C")):
        first = paragraph(x1, x2, 200, prose(f"{name}1", 6))
        lines += first + paragraph(x1, x2, below(first), prose(f"{name}2", 4))
    blocks = compose(lines, [], W, H)
    assert [t.split()[0] for t in texts(blocks)] == ["A1", "A2", "B1", "B2", "C1", "C2"]


def test_a_line_across_both_columns_joins_neither() -> None:
    abstract = paragraph(100, 1600, 200, prose("Abstract", 2))
    abstract[-1] = line(100, abstract[-1].bbox[1], 1600, "Abstract ends here and the columns")
    top = abstract[-1].bbox[3] + 8  # as close as the lines of one paragraph
    lines = abstract + paragraph(100, 820, top, prose("L", 4))
    lines += paragraph(880, 1600, top, prose("R", 4))
    blocks = compose(lines, [], W, H)
    assert [t.split()[0] for t in texts(blocks)] == ["Abstract", "L", "R"]


def test_full_width_figure_between_column_sections() -> None:
    lines = paragraph(100, 820, 200, prose("TL", 6)) + paragraph(880, 1600, 200, prose("TR", 6))
    lines += paragraph(100, 820, 1300, prose("BL", 6)) + paragraph(880, 1600, 1300, prose("BR", 6))
    lines.append(line(900, 700, 1000, "axis"))  # a label inside the figure
    regions = [Region((100, 500, 1600, 1200), "Picture", 0.9)]
    blocks = compose(lines, regions, W, H)
    assert [(t or "Picture").split()[0] for t in texts(blocks)] == [
        "TL",
        "TR",
        "Picture",
        "BL",
        "BR",
    ]
    picture = blocks[2]
    assert picture.category == "Picture"
    assert picture.text is None
    assert picture.bbox == (100, 500, 1600, 1200)
    assert not any("axis" in (t or "") for t in texts(blocks))


def test_tesseract_paragraph_numbers_split_what_proximity_would_join() -> None:
    texts_ = [f"Sentence {k} of the page goes on and" for k in range(6)]
    lines = paragraph(100, 1600, 200, texts_)
    assert len(compose(lines, [], W, H)) == 1
    for k, each in enumerate(lines):
        each.block = 0 if k < 3 else 1
    blocks = compose(lines, [], W, H)
    assert texts(blocks) == [" ".join(texts_[:3]), " ".join(texts_[3:])]


def test_tesseract_blocks_in_two_columns() -> None:
    lines = []
    for number, (x1, x2, name) in enumerate(((880, 1600, "R"), (100, 820, "L"))):
        first = paragraph(x1, x2, 200, prose(f"{name}1", 5), block=2 * number)
        for each in paragraph(x1, x2, below(first), prose(f"{name}2", 5)):
            each.block = 2 * number + 1
            first.append(each)
        lines += first
    blocks = compose(lines, [], W, H)
    assert [t.split()[0] for t in texts(blocks)] == ["L1", "L2", "R1", "R2"]


def test_table_region_becomes_one_table(monkeypatch: pytest.MonkeyPatch) -> None:
    cells = [
        line(200, 300, 400, "Name"),
        line(700, 300, 900, "Score"),
        line(200, 340, 400, "Ada"),
        line(700, 340, 900, "10"),
    ]
    regions = [Region((150, 280, 1000, 400), "Table", 0.9)]
    seen: list[list[TextLine]] = []

    def grid(lines: list[TextLine]) -> str:
        seen.append(lines)
        return "<table><tr><td>Name</td><td>Score</td></tr></table>"

    monkeypatch.setattr(tables, "table_html", grid)
    blocks = compose(cells, regions, W, H)
    assert categories(blocks) == ["Table"]
    assert blocks[0].text == "<table><tr><td>Name</td><td>Score</td></tr></table>"
    assert blocks[0].bbox == regions[0].bbox
    assert sorted(each.text for each in seen[0]) == ["10", "Ada", "Name", "Score"]

    monkeypatch.setattr(tables, "table_html", lambda lines: None)
    assert texts(compose(cells, regions, W, H)) == ["Name Score\nAda 10"]


def test_region_categories_and_their_text() -> None:
    lines = [
        line(300, 300, 1400, "Deep Things", size=40),
        line(100, 500, 400, "2 Methods", size=20),
        *paragraph(100, 1600, 560, prose("Body", 3)),
        line(600, 800, 1000, "E = mc^2"),
        line(100, 900, 1000, "Figure 1: a caption."),
        line(100, 2120, 600, "Footnote text here."),
    ]
    regions = [
        Region((290, 290, 1410, 350), "Section-header", 0.9),
        Region((90, 490, 410, 530), "Section-header", 0.9),
        Region((90, 550, 1610, 660), "Text", 0.9),
        Region((590, 790, 1010, 830), "Formula", 0.9),
        Region((90, 890, 1010, 930), "Caption", 0.9),
        Region((90, 2110, 610, 2150), "Page-footer", 0.9),
    ]
    blocks = compose(lines, regions, W, H)
    assert list(zip(categories(blocks), texts(blocks), strict=True)) == [
        ("Title", "# Deep Things"),
        ("Section-header", "## 2 Methods"),
        ("Text", " ".join(prose("Body", 3))),
        ("Formula", "E = mc^2"),
        ("Caption", "Figure 1: a caption."),
        ("Page-footer", "Footnote text here."),
    ]
    assert blocks[2].bbox == regions[2].bbox


def test_a_text_region_holding_two_paragraphs_is_split() -> None:
    first = paragraph(100, 1600, 200, prose("First", 3))
    second = paragraph(100, 1600, first[-1].bbox[3] + 22, prose("Second", 3))
    regions = [Region((90, 190, 1610, second[-1].bbox[3] + 10), "Text", 0.9)]
    blocks = compose(first + second, regions, W, H)
    assert [t.split()[0] for t in texts(blocks)] == ["First", "Second"]
    assert blocks[0].bbox == (100, 200, 1600, first[-1].bbox[3])


def test_lines_no_region_holds_are_kept() -> None:
    held = paragraph(100, 1600, 200, prose("Held"))
    missed = paragraph(100, 1600, below(held) + 40, prose("Missed"))
    regions = [Region((90, 190, 1610, held[-1].bbox[3] + 5), "Text", 0.9)]
    blocks = compose(held + missed, regions, W, H)
    assert [t.split()[0] for t in texts(blocks)] == ["Held", "Missed"]
    assert categories(blocks) == ["Text", "Text"]


def test_running_heads_and_feet() -> None:
    body = paragraph(100, 1600, 400, prose("Body", 8))
    lines = [
        *body,
        line(100, 60, 700, "Annual Report 2026", size=16),
        line(1500, 60, 1600, "iv", size=16),
        line(800, 2110, 900, "Page 3 of 9", size=16),
        line(300, 150, 1400, "Large Title Near the Top", size=44),
    ]
    blocks = compose(lines, [], W, H)
    assert list(zip(categories(blocks), texts(blocks), strict=True)) == [
        ("Page-header", "Annual Report 2026"),
        ("Page-header", "iv"),
        ("Title", "# Large Title Near the Top"),
        ("Text", " ".join(prose("Body", 8))),
        ("Page-footer", "Page 3 of 9"),
    ]


def test_headings_from_weight_size_and_what_follows() -> None:
    lines = [
        line(100, 200, 400, "Methods", bold=True),
        *paragraph(100, 1600, 250, prose("Bold", 3)),
        line(100, 500, 500, "Results and More", size=26),
        *paragraph(100, 1600, 560, prose("Larger", 3)),
        line(100, 800, 400, "Discussion"),
        *paragraph(100, 1600, 800 + LINE + GAP, prose("Plain", 3)),
        line(100, 1100, 900, "This short line ends a sentence."),
        *paragraph(100, 1600, 1100 + LINE + GAP, prose("After", 3)),
    ]
    blocks = compose(lines, [], W, H)
    assert list(zip(categories(blocks), [t.split()[0] for t in texts(blocks)], strict=True)) == [
        ("Section-header", "##"),
        ("Text", "Bold"),
        ("Section-header", "##"),
        ("Text", "Larger"),
        ("Section-header", "##"),
        ("Text", "Plain"),
        ("Text", "This"),
        ("Text", "After"),
    ]
    assert texts(blocks)[0] == "## Methods"


def test_bullets_become_list_items() -> None:
    lines = [
        line(100, 200, 900, "• First item goes"),
        line(140, 238, 700, "on a second line"),
        line(100, 276, 900, "• Second item"),
        line(100, 314, 900, "e Third item read badly"),
    ]
    blocks = compose(lines, [], W, H)
    assert list(zip(categories(blocks), texts(blocks), strict=True)) == [
        ("List-item", "- First item goes on a second line"),
        ("List-item", "- Second item"),
        ("List-item", "- Third item read badly"),
    ]


def test_list_item_region_without_a_bullet_glyph() -> None:
    lines = [line(140, 200, 900, "An item whose bullet is a picture")]
    blocks = compose(lines, [Region((90, 190, 910, 240), "List-item", 0.9)], W, H)
    assert texts(blocks) == ["- An item whose bullet is a picture"]


@pytest.mark.parametrize(
    ("rows", "joined"),
    [
        (["the infor-", "mation is here"], "the information is here"),
        (["a COVID-", "19 test"], "a COVID-19 test"),
        (["Marie-", "Curie said"], "Marie-Curie said"),
        (["ends with a dash -", "and goes on"], "ends with a dash - and goes on"),
        (["no hyphen here", "at all"], "no hyphen here at all"),
        (["这是一个", "测试。"], "这是一个测试。"),
        (["日本語の", "テキスト"], "日本語のテキスト"),
        (["한국어 문장은", "띄어 씁니다"], "한국어 문장은 띄어 씁니다"),
    ],
)
def test_joining_rows(rows: list[str], joined: str) -> None:
    lines = [line(100, 200 + k * PITCH, 900, text) for k, text in enumerate(rows)]
    assert texts(compose(lines, [], W, H)) == [joined]


def test_confidence_is_the_lines_mean() -> None:
    lines = paragraph(100, 1600, 200, prose("Sure", 2), confidence=0.8)
    lines[1].confidence = 0.6
    (block,) = compose(lines, [], W, H)
    assert block.confidence == pytest.approx(0.7)
    assert compose(paragraph(100, 1600, 200, prose("Layer", 2)), [], W, H)[0].confidence is None


def test_empty_page_and_blank_lines() -> None:
    assert compose([], [], W, H) == []
    assert compose([line(100, 100, 200, "  ")], [Region((0, 0, 10, 10), "Text", 0.5)], W, H) == []


def test_leaders_and_rules_are_dropped() -> None:
    lines = [*paragraph(100, 1600, 200, prose("Kept")), line(100, 400, 800, "...............")]
    assert [t.split()[0] for t in texts(compose(lines, [], W, H))] == ["Kept"]


def test_a_page_number_in_a_wide_margin_takes_its_row_as_running_head() -> None:
    lines = [
        line(500, 260, 1200, "Optimized Things for Other Things", size=16),
        line(1320, 260, 1340, "9", size=16),
        *paragraph(100, 1600, 400, prose("Body", 6)),
    ]
    blocks = compose(lines, [], W, H)
    assert categories(blocks) == ["Page-header", "Page-header", "Text"]


def test_numbers_and_small_print_are_no_headings() -> None:
    lines = [
        line(100, 200, 200, "0.92"),
        *paragraph(100, 1600, 200 + LINE + GAP, prose("Cells", 3)),
        line(100, 500, 900, "Journal 2004;13:447-453", size=15),
        *paragraph(100, 1600, 500 + LINE + GAP, prose("Cited", 3)),
    ]
    assert categories(compose(lines, [], W, H)) == ["Text"] * 4


def test_a_larger_heading_may_ask_a_question() -> None:
    lines = [
        line(100, 600, 900, "Is This a Heading?", size=26),
        *paragraph(100, 1600, 660, prose("Answer", 3)),
    ]
    assert texts(compose(lines, [], W, H))[0] == "## Is This a Heading?"


def test_a_last_line_with_no_descenders_stays_in_its_paragraph() -> None:
    lines = paragraph(100, 1600, 200, prose("Text", 4))
    x1, y1, _, _ = lines[-1].bbox
    # a lower box and smaller letters, as a PDF's text layer measured them on a real page
    lines[-1] = line(x1, y1, x1 + 90, "smokers.", size=15, height=23.5)
    assert len(compose(lines, [], W, H)) == 1


WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven"]


def _render_two_columns():  # a PIL image: imported lazily, as only this test needs it
    import random

    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(image)
    body = ImageFont.load_default(size=22)
    draw.text((200, 90), "Columns Read Downwards", font=ImageFont.load_default(size=44), fill=0)
    rng = random.Random(3)
    for x, names in ((90, ("Alpha", "Bravo")), (660, ("Charlie", "Delta"))):
        y = 220
        for name in names:
            for row in range(7):
                words = [name] if row == 0 else []
                while draw.textlength(" ".join(words), font=body) < 420:
                    words.append(rng.choice(WORDS))
                if row == 6:
                    draw.text((x, y), " ".join(words[:3]) + ".", font=body, fill=0)
                else:  # justified, as columns are
                    widths = [draw.textlength(word, font=body) for word in words]
                    space = (480 - sum(widths)) / (len(words) - 1)
                    at = float(x)
                    for word, width in zip(words, widths, strict=True):
                        draw.text((at, y), word, font=body, fill=0)
                        at += width + space
                y += 30
            y += 40
    return image


def _tesseract_lines(image) -> list[TextLine]:
    """Tesseract's lines with its paragraph numbers, as the CPU engine reads them."""
    tesserocr = pytest.importorskip("tesserocr")
    try:
        from dotsocr.engines.tesseract import tesseract_languages

        tessdata = tesseract_languages()["eng"]
    except (ImportError, KeyError):
        pytest.skip("no Tesseract data for eng")
    lines, paragraph_number = [], -1
    with tesserocr.PyTessBaseAPI(path=str(tessdata), psm=tesserocr.PSM.AUTO) as api:
        api.SetImage(image)
        api.Recognize()
        for element in tesserocr.iterate_level(api.GetIterator(), tesserocr.RIL.TEXTLINE):
            if element.IsAtBeginningOf(tesserocr.RIL.PARA):
                paragraph_number += 1
            box = element.BoundingBox(tesserocr.RIL.TEXTLINE)
            text = (element.GetUTF8Text(tesserocr.RIL.TEXTLINE) or "").strip()
            if box and text:
                size = 0.7 * (box[3] - box[1])
                lines.append(TextLine(tuple(map(float, box)), text, size, block=paragraph_number))
    return lines


@pytest.mark.parametrize("blocks", [True, False], ids=["tesseract-paragraphs", "proximity"])
def test_tesseract_reading_of_a_two_column_page(blocks: bool) -> None:
    image = _render_two_columns()
    lines = _tesseract_lines(image)
    if not blocks:
        for each in lines:
            each.block = None
    found = compose(lines, [], image.width, image.height)
    assert found[0].text == "# Columns Read Downwards"
    assert [t.split()[0] for t in texts(found)[1:]] == ["Alpha", "Bravo", "Charlie", "Delta"]


def test_a_line_drawn_in_pieces_is_one_line() -> None:
    lines = [
        line(100, 200, 700, "The first half of a line"),
        line(712, 200, 1600, "and its second half"),
        line(100, 238, 1600, "then the next line."),
    ]
    assert texts(compose(lines, [], W, H)) == [
        "The first half of a line and its second half then the next line."
    ]


def test_a_bullet_drawn_apart_and_a_bold_lead_in() -> None:
    # As a PDF's text layer gives a list: the bullet a line of its own, the item's first
    # line mostly bold ("IBM MT/ST:" ...) and running on into the next.
    lines = [
        line(301, 1180, 1359, "IBM MT/ST (Magnetic Tape): Introduced in 1964, this", bold=True),
        line(252, 1190, 262, "•", size=10, height=10),
        line(300, 1218, 1431, "machine combined a typewriter with magnetic tape storage"),
        line(302, 1256, 402, "storage."),
        line(252, 1304, 262, "•", size=10, height=10),
        line(300, 1294, 1372, "Wang Laboratories: In the 1970s, Wang introduced machines."),
    ]
    blocks = compose(lines, [], W, H)
    assert list(zip(categories(blocks), texts(blocks), strict=True)) == [
        (
            "List-item",
            "- IBM MT/ST (Magnetic Tape): Introduced in 1964, this machine combined a "
            "typewriter with magnetic tape storage storage.",
        ),
        ("List-item", "- Wang Laboratories: In the 1970s, Wang introduced machines."),
    ]
