"""Chinese test pages made on the spot: the corpus has no Chinese page with its text.

The passages under ``tests/data/chinese/`` are drawn with WenQuanYi Micro Hei (Debian's
``fonts-wqy-microhei``) at a page's resolution, wrapped at the margin, and can be made
to look scanned: turned a little, blurred, speckled and saved as a coarse JPEG.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
FONT_PACKAGE = "fonts-wqy-microhei"
TEXTS = Path(__file__).resolve().parent / "data" / "chinese"
POINTS_PER_INCH = 72
# Latin words and numbers (with their inner punctuation) stay whole at a line break;
# any other character may end a line, as in Chinese typesetting.
_UNBREAKABLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:%@/+-]*|.", re.DOTALL)
_NO_LINE_START = set("，。、；：？！）》」』”’%")  # punctuation kept at the end of a line


def font_available() -> bool:
    return FONT.is_file()


def require_font() -> None:
    """Skip the calling test without the font, or fail it where CI says the font is a
    must (DOTSOCR_REQUIRE_CJK_FONT, set by .ci/run, which installs it)."""
    import os

    import pytest

    if not font_available():
        message = f"no CJK font at {FONT}: apt-get install {FONT_PACKAGE}"
        if os.environ.get("DOTSOCR_REQUIRE_CJK_FONT"):
            pytest.fail(message)
        pytest.skip(message)


def passages() -> dict[str, str]:
    """Each passage's name (its file's stem) and text."""
    return {
        path.stem: path.read_text(encoding="utf-8").strip() for path in sorted(TEXTS.glob("*.txt"))
    }


def render_page(
    text: str,
    *,
    dpi: int = 200,
    size_inches: tuple[float, float] = (8.5, 11.0),
    points: float = 12.0,
    margin_inches: float = 1.0,
    leading: float = 1.6,
) -> Image.Image:
    """A white greyscale page with ``text`` set in rows from the top margin.

    Paragraphs (lines of ``text``) start on a new row; a paragraph that reaches the
    right margin wraps, and text past the bottom margin is dropped, so keep it short.
    """
    width, height = (round(side * dpi) for side in size_inches)
    margin = round(margin_inches * dpi)
    font = ImageFont.truetype(str(FONT), size=round(points * dpi / POINTS_PER_INCH))
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    step = round(font.size * leading)
    y = margin
    for paragraph in text.splitlines():
        for row in wrap(paragraph.strip(), font, width - 2 * margin):
            if y + step > height - margin:
                return page
            draw.text((margin, y), row, font=font, fill=0)
            y += step
    return page


def wrap(paragraph: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """The paragraph cut into rows no wider than ``width``, never inside a Latin word."""
    rows: list[str] = []
    row = ""
    for piece in _UNBREAKABLE.findall(paragraph):
        fits = font.getlength(row + piece) <= width
        if row and not fits and piece not in _NO_LINE_START:
            rows.append(row.rstrip())
            row = piece.lstrip()
        else:
            row += piece
    if row.strip():
        rows.append(row.rstrip())
    return rows


def scanned(
    page: Image.Image,
    *,
    angle: float = 1.0,
    blur: float = 0.7,
    noise: float = 12.0,
    quality: int = 60,
    seed: int = 0,
) -> Image.Image:
    """The page as a cheap scanner gives it back: skewed, soft, grainy, JPEG-coarse."""
    turned = page.convert("L").rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
    soft = np.asarray(turned.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32)
    grain = np.random.default_rng(seed).normal(0.0, noise, soft.shape)
    grainy = Image.fromarray(np.clip(soft + grain, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    grainy.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("L")
