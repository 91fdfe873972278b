"""Model profiles, one module per family, registered by name in one place."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

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
from dotsocr.models.deepseek_ocr import DeepSeekOCR
from dotsocr.models.dots_mocr import DotsMOCR, DotsMOCRSVG
from dotsocr.models.dots_ocr import DotsOCR
from dotsocr.models.got_ocr import ORIGINAL_HUB_ID, GotOCR
from dotsocr.models.paddleocr_vl import PaddleOCRVL
from dotsocr.models.phi_vision import Phi35Vision
from dotsocr.models.qwen_vl import Qwen3VL, QwenVL

__all__ = [
    "ChatRequest",
    "Geometry",
    "ModelProfile",
    "ParsedAnswer",
    "PreparedPage",
    "RequestPlan",
    "all_profiles",
    "estimate_text_tokens",
    "get_profile",
    "profile_for",
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
        raise UnknownModel(
            f"Unknown model {name!r}. Known: {', '.join(profile_names())} (dotsocr models "
            "describes them)"
        )
    return _FACTORIES[key]()


def all_profiles() -> list[ModelProfile]:
    """Every profile, in the order registered: the first of two sharing an architecture is
    the one a folder of that architecture gets."""
    return [factory() for factory in _FACTORIES.values()]


def profile_for(model: str | None) -> tuple[ModelProfile, str | None]:
    """The profile for what a ``--model`` option names, and the checkpoint to serve (None:
    the profile's own). A name, alias or hub id of a profile; one of its pre-quantized
    checkpoints; a local folder whose config.json names a profile's architecture. Another
    hub id or folder is taken for a dots.ocr checkpoint (a fine-tune, say) with dots.ocr's
    facts; a bare name no profile has is an error (a typo must not serve another's facts)."""
    if not model:
        return get_profile("dots.ocr"), None
    key = _ALIASES.get(model.strip().lower())
    if key is not None:
        return _FACTORIES[key](), model if "/" in model else None
    if "/" not in model and not Path(model).exists():
        get_profile(model)  # raises, naming the profiles
    profiles = all_profiles()
    for profile in profiles:
        if model in getattr(profile, "quantized", {}).values():
            return profile, model
    config = Path(model) / "config.json"
    if config.is_file():
        try:
            architectures = json.loads(config.read_text()).get("architectures") or []
        except (OSError, ValueError, AttributeError):
            architectures = []
        for profile in profiles:
            if getattr(profile, "architecture", None) in architectures:
                return profile, model
    return get_profile("dots.ocr"), model


def capped_profile(model: str | None, max_pixels: int | None) -> ModelProfile:
    """The profile for ``model``, with the server's pixel cap when it is lower than the
    model's: pages are then sized to what the server takes, so boxes map back exactly."""
    profile = profile_for(model)[0]
    if max_pixels and max_pixels < profile.max_pixels:
        profile = dataclasses.replace(profile, max_pixels=max_pixels)  # type: ignore[type-var]
    return profile


register("dots.ocr", DotsOCR, aliases=("dots_ocr", "dotsocr", DotsOCR.hf_id))
register("dots.mocr", DotsMOCR, aliases=("dots_mocr", "dotsmocr", DotsMOCR.hf_id))
register("dots.mocr-svg", DotsMOCRSVG, aliases=("dots_mocr_svg", DotsMOCRSVG.hf_id))
register("deepseek-ocr", DeepSeekOCR, aliases=("deepseek_ocr", "deepseekocr", DeepSeekOCR.hf_id))
register("paddleocr-vl", PaddleOCRVL, aliases=("paddleocr_vl", "paddleocrvl", PaddleOCRVL.hf_id))
register("qwen2.5-vl", QwenVL, aliases=("qwen2_5_vl", "qwen25-vl", QwenVL.hf_id))
register("qwen3-vl", Qwen3VL, aliases=("qwen3_vl", Qwen3VL.hf_id))
register(
    "got-ocr2",
    GotOCR,
    aliases=("got_ocr2", "got-ocr", "got-ocr-2.0", GotOCR.hf_id, ORIGINAL_HUB_ID),
)
register("phi-3.5-vision", Phi35Vision, aliases=("phi-3.5-v", "phi3.5-vision", Phi35Vision.hf_id))
