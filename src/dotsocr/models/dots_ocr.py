"""dots.ocr (rednote-hilab/dots.ocr): prompts, pixel budget, requests and answer parsing.

Facts from the model's repository and vLLM's native support, gathered in
shared/reference/dots_ocr.md: the prompt strings are the ones the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from dotsocr.errors import ConfigError, ContextTooLong
from dotsocr.layout import BBox, Cell, PageStatus
from dotsocr.models.base import ChatRequest, Geometry, ParsedAnswer, PreparedPage, RequestPlan
from dotsocr.models.cells import collapse_runaway, objects_to_cells
from dotsocr.models.json_cells import BARE_OBJECTS, CODE_FENCE, MISSING_BRACKET, salvage_objects
from dotsocr.models.resize import image_tokens, smart_resize

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
HARMLESS_REPAIRS = frozenset({MISSING_BRACKET, CODE_FENCE, BARE_OBJECTS})


@dataclass
class DotsOCR:
    """The dots.ocr profile; every number is a default that callers may override."""

    name: str = "dots.ocr"
    hf_id: str = "rednote-hilab/dots.ocr"
    tasks: tuple[str, ...] = tuple(PROMPTS)
    default_task: str = "layout_all"
    factor: int = 28  # patch 14 x spatial merge 2: one visual token per 28x28 pixels
    min_pixels: int = 3136
    max_pixels: int = 11_289_600
    temperature: float = 0.1
    top_p: float = 1.0
    max_tokens: int = 16_384  # the official parser's budget; a dense page needs 1-2k

    max_aspect_ratio: int = 200
    min_answer_tokens: int = 1024  # the planner shrinks the image before the answer gets less
    min_image_tokens: int = 256  # about 450x450 pixels: below that a page is not worth reading

    def __post_init__(self) -> None:
        if self.min_answer_tokens < 1 or self.min_image_tokens < 1:
            raise ConfigError("min_answer_tokens and min_image_tokens must be at least 1")

    def model_size(self, width: int, height: int, max_pixels: int | None = None) -> tuple[int, int]:
        """The (width, height) the model sees for an image of this size.

        The server re-checks the aspect ratio on the image we send, and rounding can push a
        page just inside the limit just outside it; the long side then gives up a step.
        """
        h, w = smart_resize(
            height,
            width,
            factor=self.factor,
            min_pixels=self.min_pixels,
            max_pixels=min(max_pixels or self.max_pixels, self.max_pixels),
            max_aspect_ratio=self.max_aspect_ratio,
        )
        while max(h, w) > self.max_aspect_ratio * min(h, w):
            h, w = (h - self.factor, w) if h > w else (h, w - self.factor)
        return w, h

    def image_tokens(self, width: int, height: int, max_pixels: int | None = None) -> int:
        """Visual tokens an image of this size costs."""
        w, h = self.model_size(width, height, max_pixels)
        return image_tokens(h, w, self.factor)

    def prepare(
        self,
        image: Image.Image,
        width: int,
        height: int,
        max_pixels: int | None = None,
        dpi: float | None = None,
    ) -> PreparedPage:
        # Resizing here, to a size smart_resize maps onto itself, means the server does no
        # resizing of its own and the token count is known before sending.
        w, h = self.model_size(image.width, image.height, max_pixels)
        resized = image if image.size == (w, h) else image.resize((w, h), Image.Resampling.BICUBIC)
        geometry = Geometry(width, height, w, h)
        return PreparedPage(resized, geometry, image_tokens(h, w, self.factor), dpi)

    def plan(
        self, width: int, height: int, *, text_tokens: int, max_model_len: int | None
    ) -> RequestPlan:
        """Choose the pixel budget and max_tokens so that the request fits the context.

        Args:
            width, height: the page image's pixels.
            text_tokens: tokens of the prompt's chat without the image, placeholder included
                (the engine's count, or ``estimate_text_tokens``).
            max_model_len: the server's context length; None means unknown (no limit).

        The answer keeps its full budget when it fits; otherwise it gets what the image
        leaves, down to ``min_answer_tokens``, and below that the image is shrunk.

        Raises:
            ContextTooLong: not even the least useful image fits beside the minimum answer.
        """
        tokens = self.image_tokens(width, height)
        if max_model_len is None:
            return RequestPlan(self.max_pixels, tokens, text_tokens - 1 + tokens, self.max_tokens)
        room = max_model_len - (text_tokens - 1)  # the placeholder becomes the image's tokens
        max_pixels = self.max_pixels
        if room - tokens < self.min_answer_tokens:
            fit = room - self.min_answer_tokens
            if fit < self.min_image_tokens:
                raise ContextTooLong(
                    f"a page cannot fit the server's context of {max_model_len} tokens: the "
                    f"prompt takes {text_tokens} and the answer needs {self.min_answer_tokens}, "
                    f"leaving {max(fit, 0)} for the image (at least {self.min_image_tokens} "
                    "needed); start the server with a larger --max-model-len"
                )
            max_pixels = fit * self.factor * self.factor
            tokens = self.image_tokens(width, height, max_pixels)
            if tokens > fit:  # a page so thin that its smallest size still costs more
                raise ContextTooLong(
                    f"a page of {width}x{height} cannot fit the server's context of "
                    f"{max_model_len} tokens even at its smallest: start the server with a "
                    "larger --max-model-len"
                )
        answer = min(self.max_tokens, room - tokens)
        return RequestPlan(max_pixels, tokens, text_tokens - 1 + tokens, answer)

    def prompt(self, task: str, geometry: Geometry | None = None, box: BBox | None = None) -> str:
        if task not in PROMPTS:
            raise ConfigError(f"unknown task {task!r} for {self.name}: choose one of {self.tasks}")
        if task != "grounding":
            return PROMPTS[task]
        if box is None or geometry is None:
            raise ConfigError("the grounding task needs a box: x1,y1,x2,y2 in page pixels")
        x1, y1, x2, y2 = geometry.to_model(box)
        return f"{PROMPTS[task]}[{x1}, {y1}, {x2}, {y2}]"

    def request_text(
        self, task: str, geometry: Geometry | None = None, box: BBox | None = None
    ) -> str:
        """The text part of the user message, image placeholder included."""
        return IMAGE_PREFIX + self.prompt(task, geometry, box)

    def build_request(
        self,
        page: PreparedPage,
        task: str,
        *,
        box: BBox | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatRequest:
        text = self.request_text(task, page.geometry, box)
        content = [
            {"type": "image_url", "image_url": {"url": page.data_url()}},
            {"type": "text", "text": text},
        ]
        return ChatRequest(
            messages=[{"role": "user", "content": content}],
            max_tokens=self.max_tokens if max_tokens is None else max_tokens,
            temperature=self.temperature if temperature is None else temperature,
            top_p=self.top_p,
            task=task,
            box=page.geometry.to_model(box) if box is not None else None,
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
        notes: list[str] = []
        if finish_reason == "length":
            notes.append("answer cut at the token budget")
        if task in LAYOUT_TASKS:
            return _parse_layout(answer, geometry, task, finish_reason, notes)
        text, runs = _plain_text(answer, notes)
        status = PageStatus.REPAIRED if runs or finish_reason == "length" else PageStatus.OK
        if not text:
            notes.append("empty answer")
            return ParsedAnswer([], status, notes)
        bbox = geometry.full_page if box is None or task != "grounding" else box
        return ParsedAnswer([Cell(bbox=bbox, category="Text", text=text)], status, notes)


def _parse_layout(
    answer: str, geometry: Geometry, task: str, finish_reason: str | None, notes: list[str]
) -> ParsedAnswer:
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
        with_text=task == "layout_all",
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
    text, _ = _plain_text(answer, notes)
    if not text:
        notes.append("empty answer to a layout prompt")
        return ParsedAnswer([], PageStatus.FALLBACK, notes)
    notes.append("answer was not layout JSON: kept as plain text")
    return ParsedAnswer(
        [Cell(bbox=geometry.full_page, category="Text", text=text)], PageStatus.FALLBACK, notes
    )


def _plain_text(answer: str, notes: list[str]) -> tuple[str, int]:
    text, runs = collapse_runaway(answer.strip())
    if runs:
        notes.append(f"{runs} runaway repeat(s) collapsed")
    return text, runs
