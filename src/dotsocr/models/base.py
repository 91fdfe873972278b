"""What every model profile provides, and the request/answer shapes around it."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from dotsocr.document.encoding import ImageFormat, encode
from dotsocr.layout import BBox, Cell, PageStatus, rescale_box


@dataclass(frozen=True)
class Geometry:
    """The two coordinate frames of a page: the original page and what the model saw."""

    width: int
    height: int
    resized_width: int
    resized_height: int

    def to_page(self, box: tuple[float, float, float, float]) -> BBox:
        """A box the model gave (resized pixels) in original-page pixels, clipped to the page."""
        return rescale_box(box, self.model_size, self.page_size)

    def to_model(self, box: tuple[float, float, float, float]) -> BBox:
        """A box in original-page pixels in the model's resized pixels."""
        return rescale_box(box, self.page_size, self.model_size)

    @property
    def page_size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def model_size(self) -> tuple[int, int]:
        return self.resized_width, self.resized_height

    @property
    def full_page(self) -> BBox:
        return (0, 0, self.width, self.height)


@dataclass(frozen=True)
class PreparedPage:
    """A page image sized for the model, with its geometry and token cost."""

    image: Image.Image | None  # None once encoded, for engines that do not read pixels
    geometry: Geometry
    image_tokens: int
    dpi: float | None = None  # of the page frame (a PDF's render), when known
    # A PDF page's own text (document.textlayer.TextLayer, in the frame's pixels), for the
    # embedded engine; None for images, and where no engine reads it.
    text_layer: Any = field(default=None, compare=False, repr=False)
    image_format: ImageFormat = "png"  # how the image is sent (document.encoding)
    # Encoded once, then shared by every request for the page (and by copies of it).
    encoded: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def data_url(self) -> str:
        if self.image_format not in self.encoded:
            if self.image is None:
                raise ValueError("the prepared image was released before it was encoded")
            data, media_type = encode(self.image, self.image_format)
            text = base64.b64encode(data).decode("ascii")
            self.encoded[self.image_format] = f"data:{media_type};base64,{text}"
        return self.encoded[self.image_format]


@dataclass
class ChatRequest:
    """An OpenAI chat-completions request, independent of the transport."""

    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float
    top_p: float
    extra: dict[str, Any] = field(default_factory=dict)
    # Not sent: what engines that do not read prompts (the CPU engine) need to know.
    task: str = ""
    box: BBox | None = None  # grounding box in the model's (resized) pixels

    def to_openai(self, model: str) -> dict[str, Any]:
        return {
            "model": model,
            "messages": self.messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            **self.extra,
        }


@dataclass
class ParsedAnswer:
    cells: list[Cell]
    status: PageStatus
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RequestPlan:
    """How one page is sent: its pixel budget and answer budget, and what it will cost."""

    max_pixels: int
    image_tokens: int
    prompt_tokens: int  # image and text, as the server will count them
    max_tokens: int


def estimate_text_tokens(prompt: str) -> int:
    """An upper bound on a prompt's tokens when the server cannot count them.

    Byte-level BPE never makes more tokens than bytes; 32 more cover the chat template.
    """
    return len(prompt.encode("utf-8")) + 32


@runtime_checkable
class ModelProfile(Protocol):
    """One model family: prompts, pixel budget, sampling defaults and answer parser."""

    name: str
    tasks: tuple[str, ...]
    default_task: str
    max_pixels: int  # the largest image the model takes; pages are capped to it
    temperature: float  # the default sampling temperature

    def model_size(self, width: int, height: int, max_pixels: int | None = None) -> tuple[int, int]:
        """The (width, height) the model sees for an image of this size."""
        ...

    def image_tokens(self, width: int, height: int, max_pixels: int | None = None) -> int:
        """Visual tokens an image of this size costs."""
        ...

    def plan(
        self, width: int, height: int, *, text_tokens: int, max_model_len: int | None
    ) -> RequestPlan:
        """The pixel and answer budgets that make a request fit the server's context."""
        ...

    def prepare(
        self,
        image: Image.Image,
        width: int,
        height: int,
        max_pixels: int | None = None,
        dpi: float | None = None,
    ) -> PreparedPage:
        """Resize a page image for the model; ``width`` x ``height`` is the page frame."""
        ...

    def request_text(
        self, task: str, geometry: Geometry | None = None, box: BBox | None = None
    ) -> str:
        """The text of the user message for ``task`` (what the server counts as text tokens)."""
        ...

    def build_request(
        self,
        page: PreparedPage,
        task: str,
        *,
        box: BBox | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatRequest: ...

    def parse(
        self,
        answer: str,
        geometry: Geometry,
        task: str,
        *,
        finish_reason: str | None = None,
        box: BBox | None = None,
    ) -> ParsedAnswer:
        """Turn any answer into cells in page pixels. Never raises."""
        ...
