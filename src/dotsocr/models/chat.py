"""What most OCR vision-language models share: a page resized to a pixel budget, one user
message with the image and a prompt, and a planner that fits the answer into the server's
context. A family's module subclasses ``ChatProfile`` and gives its prompts, its answer
parser and, when its image sizing is not Qwen2-VL's, its own ``model_size`` and
``image_tokens``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from dotsocr.errors import ConfigError, ContextTooLong
from dotsocr.layout import BBox, Cell, PageStatus
from dotsocr.models.base import ChatRequest, Geometry, ParsedAnswer, PreparedPage, RequestPlan
from dotsocr.models.cells import collapse_runaway
from dotsocr.models.resize import image_tokens as resized_tokens
from dotsocr.models.resize import smart_resize
from dotsocr.models.serving import Serving


@dataclass(frozen=True)
class Capabilities:
    """What a model gives back, for ``dotsocr models`` and for choosing one."""

    layout_boxes: bool  # cells with boxes and categories
    tables: str  # "html", "markdown" or "" (none)
    formulas: bool  # LaTeX
    languages: str  # in a few words
    summary: str  # one line


@dataclass
class ChatProfile:
    """A model read through OpenAI chat completions; every number is a default callers may
    override (``dataclasses.replace``)."""

    name: str = ""
    hf_id: str = ""
    architecture: str = ""  # config.json's architectures entry, as vLLM knows it
    tasks: tuple[str, ...] = ("ocr",)
    default_task: str = "ocr"
    factor: int = 28  # pixels per visual token side (patch x spatial merge)
    min_pixels: int = 3136
    max_pixels: int = 11_289_600
    max_aspect_ratio: int = 200
    # The server's processor sizes images with smart_resize (factor, min_pixels, its own
    # max_pixels), so a lower cap there shows in the tokens it reports: ``served_size``.
    # False for families with fixed sizes or tiling of their own.
    server_smart_resizes: bool = True
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 8192
    min_answer_tokens: int = 1024  # the planner shrinks the image before the answer gets less
    min_image_tokens: int = 256
    image_first: bool = True  # the image part before the text part in the user message
    system_prompt: str | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)  # sampling extras vLLM takes
    task_temperatures: dict[str, float] = field(default_factory=dict)  # a task's own default
    prompts: dict[str, str] = field(default_factory=dict)  # task -> prompt
    serving: Serving | None = None
    capabilities: Capabilities | None = None
    # Pre-quantized checkpoints by method ("awq", "gptq", "fp8"): hub ids.
    quantized: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.min_answer_tokens < 1 or self.min_image_tokens < 1:
            raise ConfigError("min_answer_tokens and min_image_tokens must be at least 1")

    # Sizing.
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
        return resized_tokens(h, w, self.factor)

    def tokens_for_pixels(self, tokens: int) -> int:
        """The pixel cap that costs at most ``tokens`` visual tokens."""
        return tokens * self.factor * self.factor

    def served_size(self, width: int, height: int, image_tokens: int) -> tuple[int, int] | None:
        """The (width, height) a server resized our image to, from the tokens it used.

        Args:
            width, height: the image we sent, already a size smart_resize keeps as it is.
            image_tokens: the visual tokens the server reported for it.

        A server started with a lower pixel cap than ours (``--mm-processor-kwargs
        '{"max_pixels": N}'``) shrinks the image again, and boxes in its answer come back
        in that smaller frame. Returns the size smart_resize gives under the cap that costs
        exactly ``image_tokens`` (the size we sent when the count is its own), or None when
        no cap does or the server does not size images with smart_resize.
        """
        if not self.server_smart_resizes:
            return None

        def served(cap: int) -> tuple[int, int, int]:
            h, w = smart_resize(
                height,
                width,
                factor=self.factor,
                min_pixels=self.min_pixels,
                max_pixels=cap,
                max_aspect_ratio=self.max_aspect_ratio,
            )
            return w, h, resized_tokens(h, w, self.factor)

        # Tokens never fall as the cap grows, and each side of the result is constant over
        # the caps with one count: the least cap reaching the count settles the size.
        low, high = min(self.min_pixels, width * height), width * height
        while low < high:
            middle = (low + high) // 2
            if served(middle)[2] >= image_tokens:
                high = middle
            else:
                low = middle + 1
        w, h, tokens = served(low)
        return (w, h) if tokens == image_tokens else None

    def prepare(
        self,
        image: Image.Image,
        width: int,
        height: int,
        max_pixels: int | None = None,
        dpi: float | None = None,
    ) -> PreparedPage:
        # Resizing here, to a size the server's processor maps onto itself, means the server
        # does no resizing of its own and the token count is known before sending.
        w, h = self.model_size(image.width, image.height, max_pixels)
        resized = image if image.size == (w, h) else image.resize((w, h), Image.Resampling.BICUBIC)
        geometry = Geometry(width, height, w, h)
        return PreparedPage(resized, geometry, self.image_tokens(w, h, max_pixels), dpi)

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
            max_pixels = self.tokens_for_pixels(fit)
            tokens = self.image_tokens(width, height, max_pixels)
            if tokens > fit:  # a page so thin that its smallest size still costs more
                raise ContextTooLong(
                    f"a page of {width}x{height} cannot fit the server's context of "
                    f"{max_model_len} tokens even at its smallest: start the server with a "
                    "larger --max-model-len"
                )
        answer = min(self.max_tokens, room - tokens)
        return RequestPlan(max_pixels, tokens, text_tokens - 1 + tokens, answer)

    # Requests.
    def prompt(self, task: str, geometry: Geometry | None = None, box: BBox | None = None) -> str:
        """The prompt for ``task``; families whose prompts depend on the page override it."""
        self.check_task(task)
        return self.prompts[task]

    def check_task(self, task: str) -> None:
        if task not in self.tasks:
            raise ConfigError(f"unknown task {task!r} for {self.name}: choose one of {self.tasks}")

    def request_text(
        self, task: str, geometry: Geometry | None = None, box: BBox | None = None
    ) -> str:
        """The user message's text as the server counts its tokens (with the image's
        placeholder where the chat template puts one)."""
        return self.prompt(task, geometry, box)

    def message_text(
        self, task: str, geometry: Geometry | None = None, box: BBox | None = None
    ) -> str:
        """The text part as sent: the request text, unless the template adds to it."""
        return self.request_text(task, geometry, box)

    def request_extra(self, page: PreparedPage, task: str) -> dict[str, Any]:
        """What the request carries beside the messages and sampling (vLLM's extras)."""
        return dict(self.extra_body)

    def build_request(
        self,
        page: PreparedPage,
        task: str,
        *,
        box: BBox | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatRequest:
        image = {"type": "image_url", "image_url": {"url": page.data_url()}}
        text = {"type": "text", "text": self.message_text(task, page.geometry, box)}
        if temperature is None:
            temperature = self.task_temperatures.get(task)
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        content = [image, text] if self.image_first else [text, image]
        messages.append({"role": "user", "content": content})
        return ChatRequest(
            messages=messages,
            max_tokens=self.max_tokens if max_tokens is None else max_tokens,
            temperature=self.temperature if temperature is None else temperature,
            top_p=self.top_p,
            extra=self.request_extra(page, task),
            task=task,
            box=page.geometry.to_model(box) if box is not None else None,
        )

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
        """Turn any answer into cells in page pixels. Never raises. This default keeps the
        whole answer as one text cell over the page (or over ``box``)."""
        notes = cut_note(finish_reason)
        return text_answer(answer, geometry.full_page if box is None else box, notes)


def cut_note(finish_reason: str | None) -> list[str]:
    """The notes an answer starts with: whether it was cut at the token budget."""
    return ["answer cut at the token budget"] if finish_reason == "length" else []


def plain_text(answer: str, notes: list[str]) -> tuple[str, int]:
    """The answer stripped, with runaway repeats collapsed (and noted)."""
    text, runs = collapse_runaway(answer.strip())
    if runs:
        notes.append(f"{runs} runaway repeat(s) collapsed")
    return text, runs


def text_answer(answer: str, bbox: BBox, notes: list[str]) -> ParsedAnswer:
    """The whole answer as one Text cell over ``bbox``: repaired when it was cut or looped."""
    text, runs = plain_text(answer, notes)
    cut = "answer cut at the token budget" in notes
    status = PageStatus.REPAIRED if runs or cut else PageStatus.OK
    if not text:
        notes.append("empty answer")
        return ParsedAnswer([], status, notes)
    return ParsedAnswer([Cell(bbox=bbox, category="Text", text=text)], status, notes)
