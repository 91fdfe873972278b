"""Model profiles, one module per family, registered by name in one place."""

from __future__ import annotations

from collections.abc import Callable

from dotsocr.errors import UnknownModel
from dotsocr.models.base import (
    ChatRequest,
    Geometry,
    ModelProfile,
    ParsedAnswer,
    PreparedPage,
    RequestPlan,
    estimate_text_tokens,
)
from dotsocr.models.dots_ocr import DotsOCR

__all__ = [
    "ChatRequest",
    "Geometry",
    "ModelProfile",
    "ParsedAnswer",
    "PreparedPage",
    "RequestPlan",
    "estimate_text_tokens",
    "get_profile",
    "profile_names",
    "register",
]

_FACTORIES: dict[str, Callable[[], ModelProfile]] = {}
_ALIASES: dict[str, str] = {}


def register(name: str, factory: Callable[[], ModelProfile], aliases: tuple[str, ...] = ()) -> None:
    """Make a profile available under its name and aliases (case-insensitive)."""
    _FACTORIES[name] = factory
    for alias in (name, *aliases):
        _ALIASES[alias.lower()] = name


def profile_names() -> list[str]:
    return sorted(_FACTORIES)


def get_profile(name: str) -> ModelProfile:
    """A fresh profile instance for a model name, hub id or alias."""
    key = _ALIASES.get(name.strip().lower())
    if key is None:
        raise UnknownModel(f"Unknown model {name!r}. Known: {', '.join(profile_names())}")
    return _FACTORIES[key]()


register("dots.ocr", DotsOCR, aliases=("dots_ocr", "dotsocr", DotsOCR.hf_id))
