"""What every engine provides: one answer per request, and ownership of its resources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Self, runtime_checkable

from dotsocr.models.base import ChatRequest, PreparedPage


@dataclass(frozen=True)
class EngineAnswer:
    """The model's answer to one request, with what it cost."""

    text: str
    finish_reason: str | None  # "stop", or "length" when the answer hit max_tokens
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float  # from sending the first attempt to the answer, retries included
    attempts: int  # 1 plus the retries it took
    engine: str = ""  # what read it, with its version: "vllm 0.32.0", "tesseract 5.5.4"
    model: str | None = None  # the model's name where it was served
    # What else the engine chose for this page (the CPU engine: recogniser, orientation).
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """An async context manager that owns its connections or workers.

    Engines know transport, not documents: they take a prepared page and its request
    and give back text, finish reason, usage and latency.
    """

    reads_pixels: bool  # False: the request's encoded image is all it needs

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def infer(self, page: PreparedPage, request: ChatRequest) -> EngineAnswer: ...


def reads_text_layer(engine: object) -> bool:
    """Whether the engine reads a PDF page's own text layer (the embedded engine does), so
    that documents extract it only for such engines."""
    return bool(getattr(engine, "reads_text_layer", False))
