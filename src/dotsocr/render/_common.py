"""Helpers every renderer shares: formula unwrapping, block joining, picture crops."""

from __future__ import annotations

import io
import re

from PIL import Image

from dotsocr.layout import BBox, PageResult, rescale_box

_WRAPPERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))
_DOLLAR = re.compile(r"(?<!\\)\$")
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})


def strip_math(text: str) -> str:
    """LaTeX without one enclosing ``$$..$$``, ``\\[..\\]``, ``\\(..\\)`` or ``$..$``."""
    latex = text.strip()
    for _ in range(3):  # nested wrappers such as "$$ \[ x \] $$"; bounded on purpose
        inner = _unwrap_once(latex)
        if inner is None:
            break
        latex = inner
    return latex


def _unwrap_once(latex: str) -> str | None:
    for opening, closing in _WRAPPERS:
        if len(latex) < len(opening) + len(closing):
            continue
        if not (latex.startswith(opening) and latex.endswith(closing)):
            continue
        inner = latex[len(opening) : -len(closing)]
        # "$a$ + $b$" starts and ends with "$" but is two formulas, not one wrapper.
        if closing in inner or (opening.startswith("$") and _DOLLAR.search(inner)):
            return None
        return inner.strip()
    return None


def image_box(box: BBox, page: PageResult, size: tuple[int, int]) -> BBox:
    """Map a page-frame box onto an image of ``size`` pixels, clipped to it."""
    return rescale_box(box, (page.width, page.height), size)


def to_png_bytes(image: Image.Image) -> bytes:
    """Encode an image as PNG, converting modes PNG cannot hold to RGB."""
    if image.mode not in _PNG_MODES:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def trim_block(text: str) -> str:
    """Drop leading blank lines and trailing whitespace, keeping indentation."""
    return _LEADING_BLANK_LINES.sub("", text).rstrip()


def join_blocks(blocks: list[str]) -> str:
    """Blocks separated by one blank line, ending in one newline ('' when empty)."""
    text = "\n\n".join(b for b in blocks if b)
    return text + "\n" if text else ""
