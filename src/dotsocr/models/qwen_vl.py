"""Qwen2.5-VL and Qwen3-VL read as OCR models: prompts, pixel budgets, requests and parsing.

Facts and where they come from:

- Layout prompt and answer format, the "QwenVL HTML" document parser format (elements with
  ``data-bbox="x1 y1 x2 y2"``; ``div`` classes ``image``, ``image caption``, ``chart``,
  ``formula.machine_printed``, ``formula.handwritten``, ``music sheet``, ``chemical
  formula``; answers wrapped in a code fence):
  https://github.com/QwenLM/Qwen2.5-VL/blob/main/cookbooks/document_parsing.ipynb
  (prompt "QwenVL HTML"; boxes in the resized image's pixels) and
  https://github.com/QwenLM/Qwen3-VL/blob/main/cookbooks/document_parsing.ipynb
  (prompt "qwenvl html"; boxes relative, 0-1000).
- Grounding answers are JSON ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]``
  (``text_content`` for text spotting): absolute pixels of the resized image for
  Qwen2.5-VL (README "absolute coordinate and JSON formats";
  https://github.com/QwenLM/Qwen2.5-VL/blob/main/cookbooks/ocr.ipynb), relative on a
  0-1000 scale for Qwen3-VL ("changed from the absolute coordinates used in Qwen2.5-VL to
  relative coordinates ranging from 0 to 1000", 2d_grounding cookbook, quoted in
  https://github.com/QwenLM/Qwen3-VL/issues/1741).
- Sizing: Qwen2-VL's smart_resize in both. Qwen2.5-VL: patch 14, merge 2 (28 pixels a
  token), min_pixels 3136, max_pixels 12845056 (Qwen/Qwen2.5-VL-7B-Instruct
  preprocessor_config.json). Qwen3-VL: patch 16, merge 2 (32 pixels a token),
  size.shortest_edge 65536 and size.longest_edge 16777216, which are min_pixels and
  max_pixels (https://github.com/QwenLM/Qwen3-VL README, "Pixel Control via Official
  Processor"; Qwen/Qwen3-VL-8B-Instruct preprocessor_config.json). vLLM 0.32 folds
  ``max_pixels`` in --mm-processor-kwargs into that size for both
  (vllm/model_executor/models/qwen2_vl.py, qwen3_vl.py).
- Shapes: config.json of Qwen/Qwen2.5-VL-7B-Instruct and Qwen/Qwen3-VL-8B-Instruct;
  parameter counts from those configs (8,292,166,656 and 8,767,123,696).
- Sampling: Qwen2.5-VL's README vLLM example (temperature 0.1, top_p 0.001,
  repetition_penalty 1.05, as in its generation_config.json); Qwen3-VL's README runs its
  OCR example greedily (temperature 0) and gives top_p 0.8, top_k 20 for VL tasks
  ("Generation Hyperparameters").
- Pre-quantized: Qwen/Qwen2.5-VL-{3B,7B,72B}-Instruct-AWQ (README news of 2025.02.20;
  Qwen/Qwen2.5-VL-32B-Instruct-AWQ followed), Qwen/Qwen3-VL-{2B,4B,8B}-Instruct-FP8
  (README news of 2025.10.04).
- vLLM: https://docs.vllm.ai/en/latest/serving/multimodal_inputs.html; the README serves
  both with no special flag (vllm serve Qwen/Qwen2.5-VL-7B-Instruct --limit-mm-per-prompt
  image=5,video=5; the planner sets the image limit itself).

Our own choices (no published prompt exists for them): the Markdown prompt of the "ocr"
task, the JSON layout-detection prompt of "layout_only" and the read-this-box prompt of
"grounding".
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from dotsocr.errors import ConfigError
from dotsocr.layout import BBox, Cell, PageStatus, rescale_box
from dotsocr.models.base import Geometry, ParsedAnswer
from dotsocr.models.cells import canonical_category, objects_to_cells
from dotsocr.models.chat import Capabilities, ChatProfile, cut_note, plain_text, text_answer
from dotsocr.models.json_cells import (
    BARE_OBJECTS,
    CODE_FENCE,
    MISSING_BRACKET,
    salvage_objects,
    strip_fence,
)
from dotsocr.models.serving import Decoder, Serving, VisionTower

IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
"""What the chat template writes for an image part; counted by /tokenize as text."""

_LAYOUT_LABELS = (
    "title, section header, text, list item, table, picture, caption, formula, footnote, "
    "page header, page footer"
)
PROMPTS: dict[str, str] = {
    "layout_all": "QwenVL HTML",
    "layout_only": (
        "Outline the position of every layout element on this document page and output all "
        "the coordinates in JSON format, labelling each as one of: " + _LAYOUT_LABELS + "."
    ),
    "ocr": (
        "Convert this document image to Markdown in reading order: tables as HTML, formulas "
        "as LaTeX. Output only the content of the page, without any additional descriptions."
    ),
    "grounding": "Read the text inside the box {box} and output only that text.",
}
QWEN3_PROMPTS = {**PROMPTS, "layout_all": "qwenvl html"}
LAYOUT_TASKS = frozenset({"layout_all", "layout_only"})
HARMLESS_REPAIRS = frozenset({MISSING_BRACKET, CODE_FENCE, BARE_OBJECTS})

QWEN25_VL_7B = Serving(
    hub_id="Qwen/Qwen2.5-VL-7B-Instruct",
    weight_bytes=2 * 8_292_166_656,  # 15.4 GiB in bf16; the vision tower is 0.68B of it
    vision=VisionTower(embed_dim=1280, intermediate=3420, heads=16, patch=14, merge=2),
    decoder=Decoder.dense(
        layers=28,
        hidden=3584,
        intermediate=18944,
        kv_heads=4,
        head_dim=128,
        vocab=152_064,
    ),
    max_image_tokens=12_845_056 // (28 * 28),  # 16,384
    pixels_per_token=28 * 28,
)
QWEN3_VL_8B = Serving(
    hub_id="Qwen/Qwen3-VL-8B-Instruct",
    weight_bytes=2 * 8_767_123_696,  # 16.3 GiB in bf16; the vision tower is 0.58B of it
    vision=VisionTower(embed_dim=1152, intermediate=4304, heads=16, patch=16, merge=2),
    decoder=Decoder.dense(
        layers=36,
        hidden=4096,
        intermediate=12288,
        kv_heads=8,
        head_dim=128,
        vocab=151_936,
    ),
    max_image_tokens=16_777_216 // (32 * 32),  # 16,384
    pixels_per_token=32 * 32,
)

QWEN25_CAPABILITIES = Capabilities(
    layout_boxes=True,
    tables="html",
    formulas=True,
    languages="multilingual, strongest on English and Chinese",
    summary="general VLM: layout as QwenVL HTML, Markdown text, boxes in resized pixels",
)
QWEN3_CAPABILITIES = Capabilities(
    layout_boxes=True,
    tables="html",
    formulas=True,
    languages="32 languages for OCR",
    summary="general VLM: layout as QwenVL HTML, Markdown text, boxes on a 0-1000 grid",
)


@dataclass
class QwenVL(ChatProfile):
    """Qwen2.5-VL (default Qwen/Qwen2.5-VL-7B-Instruct); every number is a default callers
    may override."""

    name: str = "qwen2.5-vl"
    hf_id: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    architecture: str = "Qwen2_5_VLForConditionalGeneration"
    tasks: tuple[str, ...] = ("layout_all", "layout_only", "ocr", "grounding")
    default_task: str = "layout_all"
    factor: int = 28  # patch 14 x spatial merge 2
    min_pixels: int = 3136
    max_pixels: int = 12_845_056
    temperature: float = 0.1
    # The README's top_p of 0.001 makes every temperature greedy, which would turn the
    # pipeline's warmer retries into repeats of the first answer: left at 1.0.
    top_p: float = 1.0
    max_tokens: int = 16_384  # QwenVL HTML costs about 12 tokens a box on top of the text
    extra_body: dict[str, Any] = field(default_factory=lambda: {"repetition_penalty": 1.05})
    serving: Serving | None = QWEN25_VL_7B
    capabilities: Capabilities | None = QWEN25_CAPABILITIES
    quantized: dict[str, str] = field(
        default_factory=lambda: {"awq": "Qwen/Qwen2.5-VL-7B-Instruct-AWQ"}
    )
    prompts: dict[str, str] = field(default_factory=lambda: dict(PROMPTS))
    # The grid the model's boxes are on: None for the resized image's own pixels, else
    # the side of a relative grid (1000: 0..1000 across the image, whatever its size).
    coordinate_grid: int | None = None

    # Coordinates.
    def box_to_model(self, box: BBox, geometry: Geometry) -> BBox:
        """A box in page pixels as the model writes boxes."""
        if self.coordinate_grid is None:
            return geometry.to_model(box)
        grid = self.coordinate_grid
        return rescale_box(box, geometry.page_size, (grid, grid))

    def box_from_model(self, numbers: list[float], geometry: Geometry) -> list[float]:
        """A box the model wrote, in the resized image's pixels (what objects_to_cells maps
        to the page)."""
        if self.coordinate_grid is None:
            return numbers
        sx = geometry.resized_width / self.coordinate_grid
        sy = geometry.resized_height / self.coordinate_grid
        x1, y1, x2, y2 = numbers
        return [x1 * sx, y1 * sy, x2 * sx, y2 * sy]

    # Requests.
    def prompt(self, task: str, geometry: Geometry | None = None, box: BBox | None = None) -> str:
        self.check_task(task)
        if task != "grounding":
            return self.prompts[task]
        if box is None or geometry is None:
            raise ConfigError("the grounding task needs a box: x1,y1,x2,y2 in page pixels")
        x1, y1, x2, y2 = self.box_to_model(box, geometry)
        return self.prompts[task].format(box=f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}]}}')

    def request_text(
        self, task: str, geometry: Geometry | None = None, box: BBox | None = None
    ) -> str:
        """The user message as the server counts it: the chat template writes the image
        part as IMAGE_PLACEHOLDER right before the text, and /tokenize counts a string
        holding it the same way (the placeholder as the one token the image replaces)."""
        return IMAGE_PLACEHOLDER + self.prompt(task, geometry, box)

    def message_text(
        self, task: str, geometry: Geometry | None = None, box: BBox | None = None
    ) -> str:
        """The prompt alone: the chat template adds the placeholder before it."""
        return self.prompt(task, geometry, box)

    # Answers.
    def parse(
        self,
        answer: str,
        geometry: Geometry,
        task: str,
        *,
        finish_reason: str | None = None,
        box: BBox | None = None,
    ) -> ParsedAnswer:
        notes = cut_note(finish_reason)
        cut = finish_reason == "length"
        if task == "ocr":
            body = strip_fence(answer)
            if body != answer:
                notes.append(CODE_FENCE)
            return text_answer(body, geometry.full_page, notes)
        with_text = task != "layout_only"
        parsed = parse_html(answer, geometry, self.box_from_model, with_text, cut, notes)
        if parsed is None:
            labels = task in LAYOUT_TASKS
            parsed = parse_json(
                answer, geometry, self.box_from_model, with_text, labels, cut, notes
            )
        if parsed is not None:
            return parsed
        if task == "grounding":
            return text_answer(
                strip_fence(answer), geometry.full_page if box is None else box, notes
            )
        return as_text(answer, geometry, notes)


@dataclass
class Qwen3VL(QwenVL):
    """Qwen3-VL (default Qwen/Qwen3-VL-8B-Instruct): Qwen2.5-VL's formats on a 0-1000 grid,
    32 pixels a visual token."""

    name: str = "qwen3-vl"
    hf_id: str = "Qwen/Qwen3-VL-8B-Instruct"
    architecture: str = "Qwen3VLForConditionalGeneration"
    factor: int = 32  # patch 16 x spatial merge 2
    min_pixels: int = 65_536
    max_pixels: int = 16_777_216
    temperature: float = 0.0
    top_p: float = 0.8
    # presence_penalty 1.5 (the model card's VL setting) is left out: it punishes every
    # token a transcription must repeat (digits, table tags).
    extra_body: dict[str, Any] = field(default_factory=lambda: {"top_k": 20})
    serving: Serving | None = QWEN3_VL_8B
    capabilities: Capabilities | None = QWEN3_CAPABILITIES
    quantized: dict[str, str] = field(
        default_factory=lambda: {"fp8": "Qwen/Qwen3-VL-8B-Instruct-FP8"}
    )
    prompts: dict[str, str] = field(default_factory=lambda: dict(QWEN3_PROMPTS))
    coordinate_grid: int | None = 1000


# --- answers ---------------------------------------------------------------------------

BoxMapper = Callable[[list[float], Geometry], list[float]]


def _numbers(value: Any) -> list[float] | None:
    """Four numbers from "x1 y1 x2 y2", "x1,y1,x2,y2" or a JSON list, else None."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    try:
        numbers = [float(v) for v in value if not isinstance(v, bool)]
    except (TypeError, ValueError, OverflowError):
        return None
    return numbers if len(numbers) == 4 else None


def _objects(
    items: Iterable[dict[str, Any]], geometry: Geometry, to_model: BoxMapper
) -> list[dict[str, Any]]:
    """Items with the model's boxes as objects_to_cells takes them (resized pixels)."""
    out = []
    for item in items:
        numbers = _numbers(item["bbox"])
        out.append({**item, "bbox": None if numbers is None else to_model(numbers, geometry)})
    return out


def _status(notes: list[str], before: int, mended: bool) -> PageStatus:
    """Repaired when anything was lost or mended: unknown categories, kept as given, and
    harmless JSON repairs lose nothing."""
    lossy = [n for n in notes[before:] if not n.startswith("unknown category")]
    return PageStatus.REPAIRED if lossy or mended else PageStatus.OK


def as_text(answer: str, geometry: Geometry, notes: list[str]) -> ParsedAnswer:
    """A layout prompt answered with no usable structure: the words as one text cell."""
    text, _ = plain_text(strip_fence(answer), notes)
    if not text:
        notes.append("empty answer to a layout prompt")
        return ParsedAnswer([], PageStatus.FALLBACK, notes)
    notes.append("answer was neither QwenVL HTML nor JSON boxes: kept as plain text")
    return ParsedAnswer(
        [Cell(bbox=geometry.full_page, category="Text", text=text)], PageStatus.FALLBACK, notes
    )


# JSON boxes ([{"bbox_2d": [...], "label": ..., "text_content": ...}]).

_LABEL_SYNONYMS = {
    "heading": "Section-header",
    "header": "Page-header",
    "footer": "Page-footer",
    "paragraph": "Text",
    "plain text": "Text",
    "list": "List-item",
    "figure": "Picture",
    "image": "Picture",
    "chart": "Picture",
    "equation": "Formula",
    "figure caption": "Caption",
    "table caption": "Caption",
}


def _label(value: Any) -> str:
    name = value.strip().lower() if isinstance(value, str) else ""
    return _LABEL_SYNONYMS.get(name) or canonical_category(value)[0]


def parse_json(
    answer: str,
    geometry: Geometry,
    to_model: BoxMapper,
    with_text: bool,
    labels: bool,
    cut: bool,
    notes: list[str],
) -> ParsedAnswer | None:
    """Grounding JSON as cells; None when the answer holds no object with a box.

    ``labels``: the label is the category (layout detection); otherwise every box is
    Text and a label stands in for missing text.
    """
    salvage = salvage_objects(answer, truncated_hint=cut)
    boxed = [o for o in salvage.objects if isinstance(o, dict) and ("bbox_2d" in o or "bbox" in o)]
    if not boxed and not (salvage.truncated and '"bbox' in answer):
        return None  # no JSON, or JSON without boxes: not a grounding answer
    notes.extend(salvage.repairs)
    if salvage.dropped_partial:
        notes.append("unfinished last cell dropped")
    before = len(notes)
    items = []
    for obj in boxed:
        text = obj.get("text_content", obj.get("text", obj.get("content")))
        label = obj.get("label", obj.get("category"))
        if labels:
            category = _label(label) if label is not None else "Text"
        else:
            category, text = "Text", text if text is not None else label
        items.append({"bbox": obj.get("bbox_2d", obj.get("bbox")), "category": category,
                      "text": None if text is None else str(text)})  # fmt: skip
    cells = objects_to_cells(
        _objects(items, geometry, to_model), geometry, with_text=with_text, notes=notes,
        truncated=salvage.truncated,
    )  # fmt: skip
    if not cells and salvage.truncated:
        notes.append("no complete cell before the answer was cut")
    repairs = [r for r in salvage.repairs if r not in HARMLESS_REPAIRS]
    mended = bool(repairs) or salvage.truncated or salvage.dropped_partial or cut
    return ParsedAnswer(cells, _status(notes, before, mended), notes)


# QwenVL HTML.

_VOID = frozenset(
    {"img", "br", "hr", "input", "area", "meta", "link", "col", "source", "embed", "wbr"}
)
# Elements that hold other boxed elements: a cell only when none of those is inside.
_CONTAINERS = frozenset(
    {"html", "body", "div", "section", "article", "main", "nav", "aside", "figure",
     "ul", "ol", "dl", "form"}
)  # fmt: skip
# A boxed one of these that opens inside an open paragraph or heading ends it (HTML's
# implied end tag), so that a model forgetting </p> does not swallow the page.
_BLOCKS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "div", "ul", "ol", "li", "header",
     "footer", "figure", "section", "blockquote", "pre"}
)  # fmt: skip
_PARAGRAPHS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6"})
# Tags whose start begins a new line of the cell's text.
_LINE_BREAKS = _BLOCKS | {"br", "tr", "dt", "dd", "caption", "figcaption"}
_TAGS = {
    "h1": "Title",
    **{f"h{n}": "Section-header" for n in range(2, 7)},
    "p": "Text",
    "table": "Table",
    "img": "Picture",
    "svg": "Picture",
    "figure": "Picture",
    "math": "Formula",
    "formula": "Formula",
    "ul": "List-item",
    "ol": "List-item",
    "li": "List-item",
    "header": "Page-header",
    "footer": "Page-footer",
    "caption": "Caption",
    "figcaption": "Caption",
}
# The cookbook's classes, then the obvious ones; the first match wins.
_CLASSES = (
    ("chemical", "Picture"),
    ("music", "Picture"),
    ("formula", "Formula"),
    ("equation", "Formula"),
    ("image", "Picture"),
    ("chart", "Picture"),
    ("figure", "Picture"),
    ("footnote", "Footnote"),
    ("caption", "Caption"),
    ("page-header", "Page-header"),
    ("header", "Page-header"),
    ("page-footer", "Page-footer"),
    ("footer", "Page-footer"),
    ("title", "Title"),
    ("table", "Table"),
    ("list", "List-item"),
)
_CLASSED = frozenset({"div", "p", "span", "section", "aside"})


def _category(tag: str, attrs: dict[str, str | None]) -> str:
    words = (attrs.get("class") or "").lower()
    if tag in _CLASSED and words:
        for word, category in _CLASSES:
            if word in words:
                return category
    return _TAGS.get(tag, "Text")


@dataclass
class _Element:
    tag: str
    box: str | None
    category: str
    collects: bool  # a cell, or a boxed container that may become one
    container: bool = False
    text: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)  # a table's own markup
    has_cells: bool = False


def _start_tag(tag: str, attrs: list[tuple[str, str | None]]) -> str:
    """A start tag without the layout attributes, as a table cell's text keeps it."""
    kept = "".join(
        f" {name}" if value is None else f' {name}="{html.escape(value)}"'
        for name, value in attrs
        if name not in ("data-bbox", "data-polygon")
    )
    return f"<{tag}{kept}>"


class _QwenHTML(HTMLParser):
    """Collect the outermost elements carrying data-bbox, with their category and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[dict[str, Any]] = []
        self.stack: list[_Element] = []
        self.boxes = 0  # elements with data-bbox seen
        self.implied_ends = 0
        self.unfinished = False

    def _leaf(self) -> int | None:
        return next((i for i, e in enumerate(self.stack) if e.collects and not e.container), None)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        box = values.get("data-bbox")
        self.boxes += box is not None
        leaf = self._leaf()
        if leaf is not None:
            open_tag = self.stack[leaf].tag
            if box is not None and open_tag in _PARAGRAPHS and tag in _BLOCKS:
                self.implied_ends += 1
                self._close_to(leaf)
                leaf = None
        if leaf is not None:  # content of the open cell
            if self.stack[leaf].tag == "table":
                self.stack[leaf].html.append(_start_tag(tag, attrs))
            if tag in _LINE_BREAKS:
                self._data("\n")
            if tag not in _VOID:
                self.stack.append(_Element(tag, None, "", collects=False))
            return
        if tag in _LINE_BREAKS:
            self._data("\n")
        category = _category(tag, values)
        inside_box = any(e.box is not None for e in self.stack)
        if tag in _VOID:
            if box is not None or (tag == "img" and not inside_box):
                self._emit(_Element(tag, box, category, collects=True))
            return
        container = tag in _CONTAINERS
        if box is None and (container or inside_box or tag not in _TAGS):
            self.stack.append(_Element(tag, None, "", collects=False))
            return
        element = _Element(tag, box, category, collects=True, container=container)
        if tag == "table":
            element.html.append(_start_tag(tag, attrs))
        self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        index = next(
            (i for i in range(len(self.stack) - 1, -1, -1) if self.stack[i].tag == tag), None
        )
        if index is None:
            return  # a stray end tag
        leaf = self._leaf()
        if leaf is not None and index > leaf:  # inside the open cell
            if self.stack[leaf].tag == "table":
                self.stack[leaf].html.append(f"</{tag}>")
            del self.stack[index:]
            return
        if any(e.collects and not e.container for e in self.stack[index + 1 :]):
            self.implied_ends += 1
        self._close_to(index)

    def handle_data(self, data: str) -> None:
        leaf = self._leaf()
        if leaf is not None and self.stack[leaf].tag == "table":
            self.stack[leaf].html.append(html.escape(data, quote=False))
        # Runs of white space count as one space, kept at the edges: "two <b>bold</b>".
        words = " ".join(data.split())
        self._data(f"{' ' * data[:1].isspace()}{words}{' ' * data[-1:].isspace()}" or " ")

    def _data(self, text: str) -> None:
        for element in self.stack:
            if element.collects:
                element.text.append(text)

    def _close_to(self, index: int) -> None:
        """Close the elements from the top of the stack down to ``index``."""
        while len(self.stack) > index:
            element = self.stack.pop()
            if not element.collects:
                continue
            if element.container and element.has_cells:
                continue  # its boxed children are the cells
            if element.box is None and not "".join(element.text).strip():
                continue  # an empty element without a box: nothing lost
            self._emit(element)

    def _emit(self, element: _Element) -> None:
        for parent in self.stack:
            parent.has_cells = True
        if element.tag == "table":
            text: str | None = "".join(element.html) + "</table>"
        else:
            lines = (line.strip() for line in "".join(element.text).split("\n"))
            text = "\n".join(" ".join(line.split()) for line in lines if line) or None
        self.items.append({"bbox": element.box, "category": element.category, "text": text})

    def finish(self) -> None:
        self.close()
        # A cell still open at the end was cut mid-way: left out, as a cut JSON cell is.
        while self.stack:
            element = self.stack.pop()
            if element.collects and not (element.container and element.has_cells):
                self.unfinished = self.unfinished or element.box is not None


def parse_html(
    answer: str,
    geometry: Geometry,
    to_model: BoxMapper,
    with_text: bool,
    cut: bool,
    notes: list[str],
) -> ParsedAnswer | None:
    """QwenVL HTML as cells; None when no element carries a data-bbox."""
    parser = _QwenHTML()
    try:
        parser.feed(answer)
        parser.finish()
    except Exception:  # html.parser is lenient, but the parser must never raise
        return None
    if not parser.boxes:
        return None
    if parser.unfinished:
        notes.append("unfinished last cell dropped")
    if parser.implied_ends:
        notes.append(f"{parser.implied_ends} unclosed element(s) closed")
    before = len(notes)
    cells = objects_to_cells(
        _objects(parser.items, geometry, to_model), geometry, with_text=with_text, notes=notes,
        truncated=cut or parser.unfinished,
    )  # fmt: skip
    if not cells and (cut or parser.unfinished):
        notes.append("no complete cell before the answer was cut")
    mended = cut or parser.unfinished or bool(parser.implied_ends)
    return ParsedAnswer(cells, _status(notes, before, mended), notes)
