"""PP-OCRv6 for the embedded CPU engine, through rapidocr (models bundled in its wheel).

``PPOCR`` reads Chinese and Japanese, which Tesseract's English data cannot: one page
image at a known resolution, answered as lines with their word boxes, a confidence and a
letter size, in the image's pixels.

Measured on a 2-core machine, one thread (tests/test_recognisers.py; shared/reference/
cpu_engine.md): PP-OCRv6 reads half a page of Chinese in 1.4 s, a full 200-DPI page in
4.8 s and a 300-DPI one in 5.5 s (8-9 s before pages were scaled down to 150 DPI), most
of it recognising lines; a process reading with it peaks near 0.9 GB on one thread, 1.3 GB
on two. Its direction classifier turned a good line upside down (a 9% CER on its own), so
it is off: ``osd`` sets whole pages upright instead.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from dotsocr.errors import ConfigError, EngineError
from dotsocr.text_lines import Box, TextLine, Word, ideographic, union_box

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
        latin = not any(ideographic(char, hangul=True) for char in piece_text)
        if words and joinable and latin and not spaced:
            last = words[-1]
            words[-1] = Word(union_box((last.bbox, box)), last.text + piece_text)
        else:
            words.append(Word(box, piece_text))
        joinable = latin
    return words


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
