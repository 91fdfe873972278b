"""dots.ocr (rednote-hilab/dots.ocr): prompts, pixel budget, requests and answer parsing.

Facts from the model's repository and vLLM's native support, gathered in
shared/reference/dots_ocr.md: the prompt strings are the ones the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dotsocr.errors import ConfigError
from dotsocr.layout import BBox, Cell, PageStatus
from dotsocr.models.base import Geometry, ParsedAnswer
from dotsocr.models.cells import objects_to_cells
from dotsocr.models.chat import Capabilities, ChatProfile, cut_note, plain_text, text_answer
from dotsocr.models.json_cells import BARE_OBJECTS, CODE_FENCE, MISSING_BRACKET, salvage_objects
from dotsocr.models.serving import DOTS_OCR, Serving

_CATEGORY_LIST = (
    "['Caption', 'Footnote', 'Formula', 'List-item', 'Page-footer', 'Page-header', "
    "'Picture', 'Section-header', 'Table', 'Text', 'Title']"
)

PROMPTS: dict[str, str] = {
    "layout_all": (
        "Please output the layout information from the PDF image, including each layout "
        "element's bbox, its category, and the corresponding text content within the bbox.\n"
        "\n"
        "1. Bbox format: [x1, y1, x2, y2]\n"
        "\n"
        f"2. Layout Categories: The possible categories are {_CATEGORY_LIST}.\n"
        "\n"
        "3. Text Extraction & Formatting Rules:\n"
        "    - Picture: For the 'Picture' category, the text field should be omitted.\n"
        "    - Formula: Format its text as LaTeX.\n"
        "    - Table: Format its text as HTML.\n"
        "    - All Others (Text, Title, etc.): Format their text as Markdown.\n"
        "\n"
        "4. Constraints:\n"
        "    - The output text must be the original text from the image, with no translation.\n"
        "    - All layout elements must be sorted according to human reading order.\n"
        "\n"
        "5. Final Output: The entire output must be a single JSON object.\n"
    ),
    "layout_only": (
        "Please output the layout information from this PDF image, including each layout's "
        "bbox and its category. The bbox should be in the format [x1, y1, x2, y2]. The layout "
        f"categories for the PDF document include {_CATEGORY_LIST}. Do not output the "
        "corresponding text. The layout result should be in JSON format."
    ),
    "ocr": "Extract the text content from this image.",
    "grounding": (
        "Extract text from the given bounding box on the image (format: [x1, y1, x2, y2]).\n"
        "Bounding Box:\n"
    ),
}

IMAGE_PREFIX = "<|img|><|imgpad|><|endofimg|>"
"""Placed before the prompt so that vLLM v1 inserts no newline after the image."""

LAYOUT_TASKS = frozenset({"layout_all", "layout_only"})
CAPABILITIES = Capabilities(
    layout_boxes=True,
    tables="html",
    formulas=True,
    languages="multilingual (100+ languages, strongest on English and Chinese)",
    summary="layout, text, tables and formulas in one pass; the default",
)
HARMLESS_REPAIRS = frozenset({MISSING_BRACKET, CODE_FENCE, BARE_OBJECTS})


@dataclass
class DotsOCR(ChatProfile):
    """The dots.ocr profile; every number is a default that callers may override."""

    name: str = "dots.ocr"
    hf_id: str = "rednote-hilab/dots.ocr"
    architecture: str = "DotsOCRForCausalLM"
    tasks: tuple[str, ...] = tuple(PROMPTS)
    default_task: str = "layout_all"
    factor: int = 28  # patch 14 x spatial merge 2: one visual token per 28x28 pixels
    min_pixels: int = 3136
    max_pixels: int = 11_289_600
    temperature: float = 0.1
    top_p: float = 1.0
    max_tokens: int = 16_384  # the official parser's budget; a dense page needs 1-2k
    min_image_tokens: int = 256  # about 450x450 pixels: below that a page is not worth reading
    serving: Serving | None = DOTS_OCR
    capabilities: Capabilities | None = CAPABILITIES
    prompts: dict[str, str] = field(default_factory=lambda: dict(PROMPTS))

    def prompt(self, task: str, geometry: Geometry | None = None, box: BBox | None = None) -> str:
        self.check_task(task)
        if task != "grounding":
            return self.prompts[task]
        if box is None or geometry is None:
            raise ConfigError("the grounding task needs a box: x1,y1,x2,y2 in page pixels")
        x1, y1, x2, y2 = geometry.to_model(box)
        return f"{self.prompts[task]}[{x1}, {y1}, {x2}, {y2}]"

    def request_text(
        self, task: str, geometry: Geometry | None = None, box: BBox | None = None
    ) -> str:
        """The text part of the user message, image placeholder included."""
        return IMAGE_PREFIX + self.prompt(task, geometry, box)

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
        if task in self.layout_tasks:
            return parse_layout(answer, geometry, task != "layout_only", finish_reason, notes)
        bbox = geometry.full_page if box is None or task != "grounding" else box
        return text_answer(answer, bbox, notes)

    @property
    def layout_tasks(self) -> frozenset[str]:
        return LAYOUT_TASKS


def parse_layout(
    answer: str, geometry: Geometry, with_text: bool, finish_reason: str | None, notes: list[str]
) -> ParsedAnswer:
    """A JSON array of dots.ocr cells (bbox, category, text), however broken, as cells."""
    salvage = salvage_objects(answer, truncated_hint=finish_reason == "length")
    if not salvage.found_json:
        return _as_text(answer, geometry, notes)
    notes.extend(salvage.repairs)
    if salvage.dropped_partial:
        notes.append("unfinished last cell dropped")
    before = len(notes)
    cells = objects_to_cells(
        salvage.objects,
        geometry,
        with_text=with_text,
        notes=notes,
        truncated=salvage.truncated,
    )
    if not cells and (salvage.objects or not (salvage.closed or salvage.truncated)):
        # JSON with nothing in it that is a cell, or words with a stray bracket in them
        return _as_text(answer, geometry, notes)
    if not cells and salvage.truncated:
        notes.append("no complete cell before the answer was cut")
    # Flags that lose nothing leave the page "ok": real dots.ocr answers often end
    # without their closing bracket, and unknown categories are kept as given.
    lossy = [n for n in notes[before:] if not n.startswith("unknown category")]
    lossy += [r for r in salvage.repairs if r not in HARMLESS_REPAIRS]
    mended = lossy or salvage.truncated or salvage.dropped_partial
    status = PageStatus.REPAIRED if mended or finish_reason == "length" else PageStatus.OK
    return ParsedAnswer(cells, status, notes)


def _as_text(answer: str, geometry: Geometry, notes: list[str]) -> ParsedAnswer:
    """A layout prompt answered with no usable JSON: keep the words as one text cell."""
    text, _ = plain_text(answer, notes)
    if not text:
        notes.append("empty answer to a layout prompt")
        return ParsedAnswer([], PageStatus.FALLBACK, notes)
    notes.append("answer was not layout JSON: kept as plain text")
    return ParsedAnswer(
        [Cell(bbox=geometry.full_page, category="Text", text=text)], PageStatus.FALLBACK, notes
    )
