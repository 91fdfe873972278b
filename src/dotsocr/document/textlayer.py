"""A PDF page's own text layer, as lines in the rendered image's pixels, and whether to
trust it over OCR.

PDFium gives characters one at a time, in the order the page draws them, with boxes in
PDF points (origin bottom left, before the page's /Rotate). ``extract`` moves the boxes
into the pixels of ``page.render(scale=scale)``, turns each character into the frame
where its text runs left to right (so text drawn sideways groups as well as upright
text), and groups characters into words and lines:

- runs: characters that follow one another in the drawing order on one band of height,
  moving right, with no gap wider than ``COLUMN_GAP`` em (two columns drawn line by
  line break there);
- lines: runs on the same band that follow each other within a word gap (a line drawn
  in pieces, or out of order), merged left to right.

``TextLayer.verdict`` then says whether the layer can stand in for OCR: see
``TextLayer.verdict`` for the rule, and ``document.textlayer_trust`` for how it is judged.
"""

from __future__ import annotations

import ctypes
import math
import unicodedata
from dataclasses import dataclass, field, replace

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as raw
from PIL import Image

from dotsocr.document.textlayer_trust import Verdict, judge
from dotsocr.text_lines import Box, TextLine, Word, union_box

COLUMN_GAP = 1.0
"""A gap wider than this many em ends a line, the em being the font's ascent to descent
(about 1.15 times its size). Word gaps in justified prose stay under 0.7 em (a space is
a quarter to a third); column gutters start near 1.1 (amt_handbook_sample.pdf's)."""
PIECE_GAP = 0.8
"""Runs the PDF drew apart join into one line across no more than this: a word gap, as
when each word is its own text object; a narrow gutter between them is not one."""
WORD_GAP = 0.2
"""A gap wider than this many em starts a new word where the PDF draws no space: a
thin space is a sixth of an em, and kerning is far less."""
BAND_OVERLAP = 0.5
"""Two characters or runs share a line when their em boxes overlap by this share of the
lower one in height: superscripts and subscripts still do, the next line does not."""
BOLD_WEIGHT = 600
BOLD_NAMES = ("bold", "black", "heavy", "semibold", "demi")

INVISIBLE = 3  # text render mode 3: neither filled nor stroked (OCR's hidden layer)
_BREAKS = frozenset("\r\n\u2028\u2029")
# PDFium's mark for a hyphen ending a line (\x02 by index, U+FFFE in its page text), and
# the soft hyphen.
_HYPHENS = frozenset("\x02\ufffe\xad")
_DEVICE_SCALE = 64  # FPDF_PageToDevice answers whole pixels: ask on a finer device


@dataclass
class TextLayer:
    """A page's text layer: its lines, and counts of what its characters are."""

    lines: list[TextLine] = field(default_factory=list)
    chars: int = 0  # visible characters with text
    invisible: int = 0  # characters drawn invisibly (render mode 3) or under an image
    unmapped: int = 0  # characters with no usable Unicode (U+FFFD, private use, controls)
    unreadable: str | None = None  # why PDFium could not give the layer, when it could not

    def scaled(self, factor: float) -> TextLayer:
        """The layer in the pixels of the page image resized by ``factor``."""
        return replace(self, lines=[line.scaled(factor) for line in self.lines])

    def verdict(self, image: Image.Image) -> Verdict:
        """Whether these lines can stand in for OCR of ``image``: the page as rendered at
        the scale given to ``extract``.

        In order: no characters at all is "no text layer"; more invisible characters
        (render mode 3, or under a later image) than drawn ones is an earlier OCR's
        layer; more than ``MAX_UNMAPPED`` of the drawn ones unreadable is garbage; and
        the lines must cover at least ``MIN_COVER`` of the page's print-like ink, so
        that a scan with a stamp drawn as text, or a page of text in images, goes to
        OCR while a page with photos, charts and rules beside its text stays trusted.
        (The rule and its constants live in ``document.textlayer_trust``.)
        """
        return judge(self, image)


@dataclass(frozen=True, slots=True)
class _Style:
    """What a text object says about all its characters."""

    invisible: bool
    bold: bool
    turns: int  # quarter turns, clockwise in the image, from left-to-right text


@dataclass(slots=True)
class _Char:
    text: str
    box: Box  # tight glyph box, in the frame where the text runs left to right
    em: Box  # the loose box: the advance across, ascent to descent down
    style: _Style
    space_before: bool  # a space, drawn or generated, comes before it
    rtl: bool  # a letter of a script written right to left


_NOWHERE = (0.0, 0.0, 0.0, 0.0)
_BREAK = _Char("\n", _NOWHERE, _NOWHERE, _Style(False, False, 0), True, False)


def extract(page: pdfium.PdfPage, scale: float) -> TextLayer:
    """Read ``page``'s text layer as lines in the pixels of ``page.render(scale=scale)``.

    The caller holds ``dotsocr.document.pdf.LOCK``. Characters with no box, and lines
    of only white space, are left out.
    """
    textpage = page.get_textpage()
    try:
        chars, layer = _read_chars(page, textpage, scale)
    finally:
        textpage.close()
    layer.lines = _lines(chars)
    return layer


# Reading characters


def _read_chars(
    page: pdfium.PdfPage, textpage: pdfium.PdfTextPage, scale: float
) -> tuple[list[_Char], TextLayer]:
    count = textpage.count_chars()
    layer = TextLayer()
    if count <= 0:
        return [], layer
    if min(page.get_width(), page.get_height()) * scale < 1:
        return [], layer  # nothing to render, nowhere to put a box
    handle = textpage.raw
    text = _page_text(handle, count)
    to_image = _page_to_image(page, scale)
    hidden = _under_images(page)
    styles: dict[int, _Style] = {}
    fonts: dict[int, bool] = {}  # font address: bold
    kept: list[tuple[str, _Style, bool] | None] = []  # text, style, space before; None: a break
    corners: list[float] = []  # tight left, bottom, right, top, then loose, per kept char
    left, right, bottom, top = (ctypes.c_double() for _ in range(4))
    loose = raw.FS_RECTF()
    # Local names: this loop runs for every character of the page.
    text_object, char_box, loose_box = (
        raw.FPDFText_GetTextObject,
        raw.FPDFText_GetCharBox,
        raw.FPDFText_GetLooseCharBox,
    )
    map_error, address_of = raw.FPDFText_HasUnicodeMapError, ctypes.addressof
    space = False
    for index, char in enumerate(text):
        obj = text_object(handle, index)
        if not obj or char.isspace():
            space = True
            if char in _BREAKS and kept and kept[-1] is not None:
                kept.append(None)
            continue
        address = address_of(obj.contents)
        style = styles.get(address)
        if style is None:
            style = styles[address] = _style(handle, index, obj, to_image, address in hidden, fonts)
        if style.invisible:
            layer.invisible += 1
            continue
        if (not " " < char < "\x7f" and _unmapped(char)) or map_error(handle, index):
            layer.unmapped += 1
            continue
        char_box(handle, index, left, right, bottom, top)
        if right.value <= left.value or top.value <= bottom.value:
            continue
        loose_box(handle, index, loose)
        corners += (left.value, bottom.value, right.value, top.value)
        corners += (loose.left, loose.bottom, loose.right, loose.top)
        kept.append((_normalise(char), style, space))
        space = False
    size = (math.ceil(page.get_width() * scale), math.ceil(page.get_height() * scale))
    chars = _chars(kept, corners, to_image, size)
    layer.chars = sum(char is not _BREAK for char in chars)
    return chars, layer


def _chars(
    kept: list[tuple[str, _Style, bool] | None],
    corners: list[float],
    to_image: np.ndarray,
    size: tuple[int, int],
) -> list[_Char]:
    """The kept characters with their boxes moved into the image, then into the frame
    where their text runs left to right; those off the rendered page are dropped."""
    if not corners:
        return []
    boxes = _transform(to_image, np.array(corners).reshape(-1, 4))
    middle = (boxes[::2, :2] + boxes[::2, 2:]) / 2
    shown = ((middle >= 0) & (middle <= size)).all(axis=1).tolist()
    turns = np.array([entry[1].turns for entry in kept if entry is not None] * 2)
    turns = turns.reshape(2, -1).T.reshape(-1)  # each character's tight, then loose box
    for turn in range(1, 4):
        chosen = turns == turn
        if chosen.any():
            boxes[chosen] = _turn(boxes[chosen], turn)
    values = boxes.reshape(-1, 8).tolist()
    chars: list[_Char] = []
    position = iter(zip(values, shown, strict=True))
    for entry in kept:
        if entry is None:
            chars.append(_BREAK)
            continue
        (x1, y1, x2, y2, *em), on_page = next(position)
        if on_page:
            text, style, space = entry
            box, rtl = (x1, y1, x2, y2), not text.isascii() and _right_to_left(text)
            chars.append(_Char(text, box, tuple(em), style, space, rtl))
    return chars


def _page_text(handle: pdfium.raw.FPDF_TEXTPAGE, count: int) -> str:
    """One string character per PDFium character, by index: ``FPDFText_GetText`` is not
    aligned with the character indices (on a bulleted list of redp5110_sampled.pdf it ran
    three characters ahead of the boxes), so each character is asked for."""
    unicode = raw.FPDFText_GetUnicode
    return "".join(chr(unicode(handle, i) or 0xFFFD) for i in range(count))


def _right_to_left(text: str) -> bool:
    return unicodedata.bidirectional(text[0]) in ("R", "AL")


def _unmapped(char: str) -> bool:
    """No usable Unicode: U+FFFD, private use, control, unassigned (not PDFium's hyphen)."""
    if char in _HYPHENS:
        return False
    return char == "\ufffd" or unicodedata.category(char) in ("Co", "Cc", "Cn", "Cs")


def _normalise(char: str) -> str:
    """Ligatures and other presentation forms (ﬁ, ﬀ, full-width letters) as plain text;
    the hyphen PDFium marks as breaking a word (U+FFFE) as the hyphen drawn."""
    if char in _HYPHENS:
        return "-"
    if "\ufb00" <= char <= "\ufb4f" or "\uff00" <= char <= "\uffef":
        return unicodedata.normalize("NFKC", char)
    return char


def _style(
    handle: pdfium.raw.FPDF_TEXTPAGE,
    index: int,
    obj: object,
    to_image: np.ndarray,
    hidden: bool,
    fonts: dict[int, bool],
) -> _Style:
    invisible = hidden or raw.FPDFTextObj_GetTextRenderMode(obj) == INVISIBLE
    font = raw.FPDFTextObj_GetFont(obj)
    key = ctypes.addressof(font.contents) if font else 0
    bold = fonts.get(key)
    if bold is None:
        bold = fonts[key] = _bold(font) if font else False
    matrix = raw.FS_MATRIX()
    raw.FPDFText_GetMatrix(handle, index, matrix)
    # The baseline's direction in the image: the page's turn applied to the text's.
    (a, c, _), (b, d, _) = to_image.tolist()
    dx, dy = a * matrix.a + c * matrix.b, b * matrix.a + d * matrix.b
    turns = round(math.degrees(math.atan2(dy, dx)) / 90) % 4
    return _Style(invisible, bold, turns)


def _bold(font: object) -> bool:
    """Heavy by its weight (600 and up), or by its name (Arial-BoldMT, ...)."""
    if raw.FPDFFont_GetWeight(font) >= BOLD_WEIGHT:
        return True
    size = raw.FPDFFont_GetBaseFontName(font, None, 0)
    if size <= 0:
        return False
    buffer = ctypes.create_string_buffer(size)
    raw.FPDFFont_GetBaseFontName(font, buffer, size)
    name = buffer.value.decode("utf-8", errors="replace").lower()
    return any(word in name for word in BOLD_NAMES)


def _under_images(page: pdfium.PdfPage) -> set[int]:
    """The text objects that an opaque image drawn later covers whole: OCR text some
    tools put under the page's scan, there to be found by search, not seen. (An image
    with transparency, as a watermark, hides nothing.)"""
    handle, get, kind_of = page.raw, raw.FPDFPage_GetObject, raw.FPDFPageObj_GetType
    objects = [get(handle, i) for i in range(raw.FPDFPage_CountObjects(handle))]
    kinds = [kind_of(obj) for obj in objects]
    images = [
        i
        for i, kind in enumerate(kinds)
        if kind == raw.FPDF_PAGEOBJ_IMAGE and not raw.FPDFPageObj_HasTransparency(objects[i])
    ]
    if not images or raw.FPDF_PAGEOBJ_TEXT not in kinds[: images[-1]]:
        return set()
    covers = [(i, _bounds(objects[i])) for i in images]
    hidden = set()
    for i, kind in enumerate(kinds[: images[-1]]):
        if kind == raw.FPDF_PAGEOBJ_TEXT:
            box = _bounds(objects[i])
            if any(j > i and _inside(box, cover) for j, cover in covers):
                hidden.add(ctypes.addressof(objects[i].contents))
    return hidden


def _bounds(obj: object) -> Box:
    left, bottom, right, top = (ctypes.c_float() for _ in range(4))
    raw.FPDFPageObj_GetBounds(obj, left, bottom, right, top)
    return (left.value, bottom.value, right.value, top.value)


def _inside(box: Box, cover: Box, slack: float = 1.0) -> bool:
    return (
        box[0] >= cover[0] - slack
        and box[1] >= cover[1] - slack
        and box[2] <= cover[2] + slack
        and box[3] <= cover[3] + slack
    )


def _page_to_image(page: pdfium.PdfPage, scale: float) -> np.ndarray:
    """The 2x3 affine map from PDF points to the render's pixels, /Rotate included.

    ``page.render`` draws the page onto ``ceil(width * scale)`` by ``ceil(height *
    scale)`` pixels; PDFium's own ``FPDF_PageToDevice`` on that device says where three
    points land, which fixes the map (on a device ``_DEVICE_SCALE`` times finer, as it
    answers in whole pixels).
    """
    width = math.ceil(page.get_width() * scale) * _DEVICE_SCALE
    height = math.ceil(page.get_height() * scale) * _DEVICE_SCALE
    left, bottom, right, top = page.get_bbox()
    points = [(left, bottom), (right, bottom), (left, top)]
    x, y = ctypes.c_int(), ctypes.c_int()
    device = []
    for px, py in points:
        raw.FPDF_PageToDevice(page.raw, 0, 0, width, height, 0, px, py, x, y)
        device.append((x.value / _DEVICE_SCALE, y.value / _DEVICE_SCALE))
    (x0, y0), (x1, y1), (x2, y2) = device
    a, b = (x1 - x0) / (right - left), (y1 - y0) / (right - left)
    c, d = (x2 - x0) / (top - bottom), (y2 - y0) / (top - bottom)
    return np.array([[a, c, x0 - a * left - c * bottom], [b, d, y0 - b * left - d * bottom]])


def _transform(m: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """Rectangles (left, bottom, right, top in points) as image boxes (x1, y1, x2, y2)."""
    xa = m[0, 0] * rects[:, 0] + m[0, 1] * rects[:, 1] + m[0, 2]
    ya = m[1, 0] * rects[:, 0] + m[1, 1] * rects[:, 1] + m[1, 2]
    xb = m[0, 0] * rects[:, 2] + m[0, 1] * rects[:, 3] + m[0, 2]
    yb = m[1, 0] * rects[:, 2] + m[1, 1] * rects[:, 3] + m[1, 2]
    return np.stack(
        [np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb)], axis=1
    )


def _turn(boxes: np.ndarray, turns: int) -> np.ndarray:
    """Boxes turned ``turns`` quarter turns anticlockwise about the origin: text that
    runs ``turns`` quarter turns clockwise then runs left to right."""
    for _ in range(turns % 4):
        boxes = np.stack([boxes[:, 1], -boxes[:, 2], boxes[:, 3], -boxes[:, 0]], axis=1)
    return boxes


def _unturn(box: Box, turns: int) -> Box:
    x1, y1, x2, y2 = box
    for _ in range(turns % 4):  # a quarter turn clockwise each time
        x1, y1, x2, y2 = -y2, x1, -y1, x2
    return (x1, y1, x2, y2)


# Grouping characters into lines


@dataclass(slots=True)
class _Run:
    chars: list[_Char]
    x1: float
    x2: float
    top: float
    bottom: float
    turns: int
    rtl: bool  # right to left (Arabic, Hebrew): each character left of the one before
    parts: list[_Run] = field(default_factory=list)  # itself, then the runs joined to it

    @classmethod
    def start(cls, char: _Char) -> _Run:
        x1, top, x2, bottom = char.em
        run = cls([char], x1, x2, top, bottom, char.style.turns, char.rtl)
        run.parts.append(run)
        return run

    @property
    def em(self) -> float:
        return self.bottom - self.top

    def add(self, char: _Char) -> None:
        self.chars.append(char)
        self.x1, self.x2 = min(self.x1, char.em[0]), max(self.x2, char.em[2])

    def takes(self, char: _Char) -> bool:
        """Whether ``char`` continues this run: same band, onward (rightward, or leftward
        right to left), no gutter.

        A ligature's letters (ﬃ: f, f, i) share one box, so a character may also start
        where the one before it started."""
        x1, top, x2, bottom = char.em
        if char.style.turns != self.turns or not _shares_band(self, top, bottom):
            return False
        em = min(self.em, bottom - top)  # the smaller print: a drop cap widens no gap
        before = self.chars[-1].em
        if self.rtl:
            gap, in_place = self.x1 - x2, x2 <= before[2] + 0.1 * em
        else:
            gap, in_place = x1 - self.x2, x1 >= before[0] - 0.1 * em
        return (in_place or gap >= -0.5 * em) and gap <= COLUMN_GAP * em

    def join(self, other: _Run) -> None:
        self.parts.append(other)
        self.x2 = max(self.x2, other.x2)
        self.top, self.bottom = min(self.top, other.top), max(self.bottom, other.bottom)


def _shares_band(run: _Run, top: float, bottom: float) -> bool:
    overlap = min(run.bottom, bottom) - max(run.top, top)
    return overlap >= BAND_OVERLAP * min(run.bottom - run.top, bottom - top)


def _lines(chars: list[_Char]) -> list[TextLine]:
    runs = _merge(_runs(chars))
    lines = [line for run in runs if (line := _line(run)) is not None]
    lines.sort(key=lambda line: (line.bbox[1], line.bbox[0]))
    return lines


def _runs(chars: list[_Char]) -> list[_Run]:
    runs: list[_Run] = []
    current: _Run | None = None
    for char in chars:
        if char is _BREAK:
            current = None
        elif current is not None and current.takes(char):
            current.add(char)
        else:
            current = _Run.start(char)
            runs.append(current)
    return runs


def _merge(runs: list[_Run]) -> list[_Run]:
    """Join runs of one band that follow each other left to right within ``PIECE_GAP``:
    a line the PDF drew in pieces, or out of order."""
    lines: list[_Run] = []
    active: list[_Run] = []  # lines that may still grow: they end near the sweep
    turns = None
    for run in sorted(runs, key=lambda run: (run.turns, run.x1)):
        if run.turns != turns:
            active, turns = [], run.turns
        active = [line for line in active if run.x1 - line.x2 <= 2 * COLUMN_GAP * line.em]
        host = _host(active, run)
        if host is None:
            active.append(run)
            lines.append(run)
        else:
            host.join(run)
    return lines


def _host(lines: list[_Run], run: _Run) -> _Run | None:
    best, best_gap = None, math.inf
    for line in lines:
        if not _shares_band(line, run.top, run.bottom):
            continue
        em = min(line.em, run.em)
        gap = run.x1 - line.x2
        if -0.2 * em <= gap <= PIECE_GAP * em and gap < best_gap:
            best, best_gap = line, gap
    return best


def _line(line: _Run) -> TextLine | None:
    """The line's words in reading order: its parts left to right, or right to left
    where most of its letters are written so (a Latin word in Arabic text, say)."""
    parts = sorted(line.parts, key=lambda part: part.x1)
    chars = [char for part in parts for char in part.chars]
    if sum(char.rtl for char in chars) * 2 > sum(char.text.isalpha() for char in chars):
        parts.reverse()
    words = [word for part in parts for word in _words(part, line.em)]
    text = " ".join(word.text for word in words)
    if not text.strip():
        return None
    heights = sorted(char.box[3] - char.box[1] for char in chars)
    return TextLine(
        bbox=union_box(word.bbox for word in words),
        text=text,
        size=heights[(len(heights) - 1) * 3 // 4],  # tall letters: capitals, ascenders
        words=words,
        bold=sum(char.style.bold for char in chars) * 2 > len(chars),
    )


def _words(part: _Run, em: float) -> list[Word]:
    words: list[Word] = []
    letters: list[_Char] = []
    for char in part.chars:
        if letters and _starts_word(char, letters[-1], em, part.rtl):
            words.append(_word(letters, part.turns))
            letters = []
        letters.append(char)
    if letters:
        words.append(_word(letters, part.turns))
    return words


def _starts_word(char: _Char, before: _Char, em: float, rtl: bool) -> bool:
    gap = before.em[0] - char.em[2] if rtl else char.em[0] - before.em[2]
    return char.space_before or gap > WORD_GAP * em


def _word(chars: list[_Char], turns: int) -> Word:
    box = union_box(char.box for char in chars)
    return Word(_unturn(box, turns), "".join(char.text for char in chars))
