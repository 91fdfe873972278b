"""dots.mocr (rednote-hilab/dots.mocr): dots.ocr's successor, with web pages, scene text
and image-to-SVG besides dots.ocr's document tasks.

Facts and where they come from:

- The model, its SVG-specialised variant ``rednote-hilab/dots.mocr-svg``, the vLLM launch
  (``--chat-template-content-format string --trust-remote-code``, native in vLLM since
  0.11.0): https://github.com/rednote-hilab/dots.mocr/blob/main/README.md and
  https://huggingface.co/rednote-hilab/dots.mocr
- Same architecture as dots.ocr (``DotsOCRForCausalLM``, model_type ``dots_ocr``; 1.2B
  vision encoder and a Qwen2-style 1.7B decoder), hence dots.ocr's serving shapes:
  shared/reference/dots_ocr.md, the hub's tags (``dots_ocr``) and
  https://jbarrow.ai/field_notes/dots-mocr/ (1.2B vision + 1.5B-class text model).
- Prompt strings, verbatim, including the document ones unchanged from dots.ocr:
  https://github.com/rednote-hilab/dots.mocr/blob/main/dots_mocr/utils/prompts.py
  (``prompt_web_parsing``, ``prompt_scene_spotting``, ``prompt_image_to_svg``).
- The SVG prompt's ``viewBox="0 0 {width} {height}"`` is filled with the ORIGINAL
  image's size, so the SVG is drawn in page pixels; SVG is sampled at temperature 0.9
  ("low temperature often causes repetitive/looping output"); the answer's ``<svg>``
  element is cut out of the text and, when cut short, has its open tags closed:
  https://github.com/rednote-hilab/dots.mocr/blob/main/dots_mocr/parser.py,
  .../demo/demo_vllm_svg.py and .../dots_mocr/utils/svg_utils.py
- Web parsing answers are read like ``layout_all`` (a JSON array of bbox, category,
  text in resized-image pixels): parser.py sends ``prompt_web_parsing`` through the same
  post-processing as the layout prompts.
- Scene spotting answers are instances written ``(x1, y1), (x2, y2), (x3, y3), (x4, y4)
  text``, one after another, in resized-image pixels; instances with empty text are
  dropped: ``parse_scene_text_output``, ``post_process_scene_text`` and
  ``format_scene_text_to_markdown`` in
  https://github.com/rednote-hilab/dots.mocr/blob/main/dots_mocr/utils/layout_utils.py
- Pixel budget (3136 to 11,289,600, factor 28) as dots.ocr:
  https://github.com/rednote-hilab/dots.mocr/blob/main/dots_mocr/utils/consts.py; its
  PDF renderer caps the render by that budget instead of re-rendering at 72 DPI
  (``get_matrix`` in .../dots_mocr/utils/doc_utils.py).
- Sampling: the parser's defaults are temperature 0.1, top_p 1.0, 16384 completion
  tokens (its CLI; the class default is 32768); free QA (not offered here: it needs a
  caller's question) uses the system prompt "You are a helpful assistant.".

Choices of ours:

- An SVG answer is one ``Picture`` cell over the page whose text is the SVG code: the
  picture is what the SVG redraws, JSON keeps the code, Markdown shows the page crop as
  for any picture, and plain text leaves pictures out.
- A spotting instance is one ``Text`` cell: ``bbox`` bounds its quadrilateral, ``quad``
  keeps the four corners, both in page pixels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from dotsocr.errors import ConfigError
from dotsocr.layout import BBox, Cell, PageStatus, Point, Quad, box_area
from dotsocr.models.base import Geometry, ParsedAnswer
from dotsocr.models.cells import collapse_runaway, note_mending, tidy_cells
from dotsocr.models.chat import Capabilities, cut_note, plain_text
from dotsocr.models.dots_ocr import LAYOUT_TASKS, PROMPTS, DotsOCR
from dotsocr.models.serving import DOTS_OCR, Serving

HUB_ID = "rednote-hilab/dots.mocr"
SVG_HUB_ID = "rednote-hilab/dots.mocr-svg"
"""The variant tuned for image-to-SVG; same architecture, prompts and launch flags."""

MOCR_PROMPTS: dict[str, str] = {
    **PROMPTS,
    "web": "Parsing the layout info of this webpage image with format json:\n",
    "spotting": "Detect and recognize the text in the image.",
    # {width} and {height}: the original image's size (the viewBox of the answer).
    "svg": 'Please generate the SVG code based on the image.viewBox="0 0 {width} {height}"',
}

MOCR_LAYOUT_TASKS = LAYOUT_TASKS | {"web"}
SVG_TEMPERATURE = 0.9

CAPABILITIES = Capabilities(
    layout_boxes=True,
    tables="html",
    formulas=True,
    languages="multilingual (100+ languages, strongest on English and Chinese)",
    summary="dots.ocr's successor: documents as dots.ocr, plus web pages, scene text, SVG",
)
SVG_CAPABILITIES = replace(
    CAPABILITIES, summary="dots.mocr tuned for image-to-SVG; documents as dots.mocr"
)

DOTS_MOCR = replace(DOTS_OCR, hub_id=HUB_ID)
"""Same architecture as dots.ocr, so the same shapes, weights size and launch flags."""
DOTS_MOCR_SVG = replace(DOTS_OCR, hub_id=SVG_HUB_ID)


@dataclass
class DotsMOCR(DotsOCR):
    """The dots.mocr profile; every number is a default that callers may override."""

    name: str = "dots.mocr"
    hf_id: str = HUB_ID
    tasks: tuple[str, ...] = tuple(MOCR_PROMPTS)
    serving: Serving | None = DOTS_MOCR
    capabilities: Capabilities | None = CAPABILITIES
    prompts: dict[str, str] = field(default_factory=lambda: dict(MOCR_PROMPTS))
    # Sampling temperature by task when the caller gives none.
    task_temperatures: dict[str, float] = field(default_factory=lambda: {"svg": SVG_TEMPERATURE})

    def prompt(self, task: str, geometry: Geometry | None = None, box: BBox | None = None) -> str:
        if task != "svg":
            return super().prompt(task, geometry, box)
        self.check_task(task)
        if geometry is None:
            raise ConfigError("the svg task needs the page's size for the SVG's viewBox")
        return (
            self.prompts[task]
            .replace("{width}", str(geometry.width))
            .replace("{height}", str(geometry.height))
        )

    def parse(
        self,
        answer: str,
        geometry: Geometry,
        task: str,
        *,
        finish_reason: str | None = None,
        box: BBox | None = None,
    ) -> ParsedAnswer:
        if task == "spotting":
            return parse_spotting(answer, geometry, finish_reason)
        if task == "svg":
            return parse_svg(answer, geometry, finish_reason)
        return super().parse(answer, geometry, task, finish_reason=finish_reason, box=box)

    @property
    def layout_tasks(self) -> frozenset[str]:
        return MOCR_LAYOUT_TASKS


@dataclass
class DotsMOCRSVG(DotsMOCR):
    """dots.mocr-svg: the checkpoint tuned for image-to-SVG, SVG by default."""

    name: str = "dots.mocr-svg"
    hf_id: str = SVG_HUB_ID
    default_task: str = "svg"
    serving: Serving | None = DOTS_MOCR_SVG
    capabilities: Capabilities | None = SVG_CAPABILITIES


# --- scene text spotting ---------------------------------------------------------------

_NUMBER = r"(-?\d+(?:\.\d+)?)"
_POINT = rf"\(\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\)"
_QUAD = re.compile(r"\s*,\s*".join([_POINT] * 4))
UNFINISHED = "unfinished last instance dropped"


def point_to_page(geometry: Geometry, x: float, y: float) -> Point:
    """A point the model gave (resized pixels) in original-page pixels, clipped to the page."""
    px, py, _, _ = geometry.to_page((x, y, x, y))
    return px, py


def quad_to_page(geometry: Geometry, numbers: tuple[float, ...]) -> Quad:
    """Eight coordinates x1, y1, ... x4, y4 (resized pixels) as a quad in page pixels."""
    p = [point_to_page(geometry, numbers[i], numbers[i + 1]) for i in range(0, 8, 2)]
    return p[0], p[1], p[2], p[3]


def quad_bbox(quad: Quad) -> BBox:
    xs = [x for x, _ in quad]
    ys = [y for _, y in quad]
    return min(xs), min(ys), max(xs), max(ys)


def parse_spotting(answer: str, geometry: Geometry, finish_reason: str | None) -> ParsedAnswer:
    """Quadrilaterals followed by their text, as one Text cell per instance. Never raises."""
    notes = cut_note(finish_reason)
    cut = finish_reason == "length"
    matches = list(_QUAD.finditer(answer))
    if not matches:
        return _not_spotting(answer, geometry, notes)
    cells: list[Cell] = []
    empty = runaway = degenerate = 0
    for i, match in enumerate(matches):
        last = i == len(matches) - 1
        text = answer[match.end() : len(answer) if last else matches[i + 1].start()]
        if last and cut:
            # Only what ends in a line break is whole: after it comes the start of the next
            # instance, and without one the text itself may have been cut.
            text, newline, tail = text.rpartition("\n")
            if not newline or tail.strip():
                notes.append(UNFINISHED)
            if not newline:
                break
        text, runs = collapse_runaway(text.strip())
        runaway += runs
        if not text:
            empty += 1
            continue
        quad = quad_to_page(geometry, tuple(float(v) for v in match.groups()))
        bbox = quad_bbox(quad)
        if box_area(bbox) == 0:
            degenerate += 1
        cells.append(Cell(bbox=bbox, category="Text", text=text, quad=quad))
    if empty:
        notes.append(f"{empty} instance(s) without text dropped")
    note_mending(notes, degenerate=degenerate, runaway=runaway)
    before = len(notes)
    cells = tidy_cells(cells, notes, cut)
    mended = cut or runaway or degenerate or len(notes) > before
    if not cells:
        notes.append("no complete text instance in the answer")
        return ParsedAnswer([], PageStatus.REPAIRED if cut else PageStatus.FALLBACK, notes)
    return ParsedAnswer(cells, PageStatus.REPAIRED if mended else PageStatus.OK, notes)


def _not_spotting(answer: str, geometry: Geometry, notes: list[str]) -> ParsedAnswer:
    """No quadrilateral in the answer: keep its words as one text cell over the page."""
    text, _ = plain_text(answer, notes)
    if not text:
        notes.append("empty answer to the spotting prompt")
        return ParsedAnswer([], PageStatus.FALLBACK, notes)
    notes.append("answer had no quadrilaterals: kept as plain text")
    return ParsedAnswer(
        [Cell(bbox=geometry.full_page, category="Text", text=text)], PageStatus.FALLBACK, notes
    )


# --- image to SVG ----------------------------------------------------------------------

_SVG_START = re.compile(r"<svg\b", re.IGNORECASE)
_SVG_END = re.compile(r"</svg\s*>", re.IGNORECASE)
_TAG = re.compile(r"<(/?)\s*([A-Za-z][\w:.-]*)[^<>]*?(/?)>")
_OPEN_ATTRIBUTE = re.compile(r"<path\b[^<>]*\bd=\"[^\"<>]*$")


def parse_svg(answer: str, geometry: Geometry, finish_reason: str | None) -> ParsedAnswer:
    """The ``<svg>`` element of the answer as one Picture cell over the page. Never raises.

    Its coordinates need no mapping: the prompt's viewBox is the page's own size.
    """
    notes = cut_note(finish_reason)
    start = _SVG_START.search(answer)
    if start is None:
        text, _ = plain_text(answer, notes)
        if not text:
            notes.append("empty answer to the svg prompt")
            return ParsedAnswer([], PageStatus.FALLBACK, notes)
        notes.append("answer had no <svg> element: kept as plain text")
        cell = Cell(bbox=geometry.full_page, category="Text", text=text)
        return ParsedAnswer([cell], PageStatus.FALLBACK, notes)
    end = _SVG_END.search(answer, start.end())
    if end is not None:
        svg = answer[start.start() : end.end()]
        status = PageStatus.REPAIRED if finish_reason == "length" else PageStatus.OK
    else:
        svg = close_svg(answer[start.start() :].rstrip())
        status = PageStatus.REPAIRED
        if not svg:
            notes.append("no complete SVG element before the answer was cut")
            return ParsedAnswer([], status, notes)
        notes.append("unfinished SVG closed")
    svg, runs = collapse_runaway(svg)
    if runs:
        notes.append(f"{runs} runaway repeat(s) collapsed")
        status = PageStatus.REPAIRED
    return ParsedAnswer(
        [Cell(bbox=geometry.full_page, category="Picture", text=svg)], status, notes
    )


def close_svg(svg: str) -> str:
    """An SVG cut short, made well-formed enough to draw: the unfinished ``d`` of a last
    path is ended, an unfinished last tag dropped, and every open element closed."""
    if _OPEN_ATTRIBUTE.search(svg):
        svg += '"/>'
    cut = svg.rfind("<")
    if cut > svg.rfind(">"):
        svg = svg[:cut]
    stack: list[str] = []
    for closing, name, self_closing in _TAG.findall(svg):
        if self_closing:
            continue
        if not closing:
            stack.append(name)
        elif name in stack:
            while stack.pop() != name:
                pass
    return svg + "".join(f"</{name}>" for name in reversed(stack))
