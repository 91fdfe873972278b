"""Page images with their layout drawn on: coloured boxes and numbered labels."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from dotsocr.layout import BBox, PageResult
from dotsocr.render._common import image_box

RGB = tuple[int, int, int]

CATEGORY_COLORS: dict[str, RGB] = {
    "Caption": (140, 86, 75),  # brown
    "Footnote": (188, 189, 34),  # olive
    "Formula": (23, 190, 207),  # cyan
    "List-item": (44, 160, 44),  # green
    "Page-footer": (40, 40, 40),  # charcoal
    "Page-header": (0, 0, 128),  # navy
    "Picture": (227, 119, 194),  # pink
    "Section-header": (255, 127, 14),  # orange
    "Table": (148, 103, 189),  # purple
    "Text": (31, 119, 180),  # blue
    "Title": (214, 39, 40),  # red
}
"""One colour per layout category (Tableau 10 plus navy and charcoal)."""

UNKNOWN_COLOR: RGB = (128, 128, 128)
FILL_ALPHA = 48
"""Opacity (0-255) of the fill inside each box: light enough to read the page."""


def category_color(category: str) -> RGB:
    """The box colour of a category; grey for unknown ones."""
    return CATEGORY_COLORS.get(category, UNKNOWN_COLOR)


def text_color(background: RGB) -> RGB:
    """Black or white, whichever contrasts more with ``background`` (WCAG)."""

    def linear(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in background)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return (0, 0, 0) if (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) else (255, 255, 255)


def _overlaps(a: BBox, b: BBox) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    boxes: Sequence[BBox],
    sizes: Sequence[tuple[int, int]],
    width: int,
    height: int,
    *,
    max_moves: int = 50,
) -> list[BBox]:
    """Where to draw each box's label, as ``(x1, y1, x2, y2)`` rectangles.

    A label sits just above its box's top-left corner, or inside the box's top
    when there is no room above. If it would cover a label placed before it, it
    moves down below that label, at most ``max_moves`` times and never off the page.
    """
    placed: list[BBox] = []
    for (x1, y1, _, _), (w, h) in zip(boxes, sizes, strict=True):
        x = min(max(x1, 0), max(width - w, 0))
        y = y1 - h if y1 >= h else y1
        y = min(max(y, 0), max(height - h, 0))
        for _ in range(max_moves):
            hit = next((p for p in placed if _overlaps(p, (x, y, x + w, y + h))), None)
            if hit is None or hit[3] + h > height:
                break
            y = hit[3]
        placed.append((x, y, x + w, y + h))
    return placed


def render_annotated(page: PageResult, image: Image.Image) -> Image.Image:
    """Draw ``page``'s cells on ``image``: a new RGB image of the same size.

    Boxes are scaled from the page frame to the image's pixels, filled lightly and
    outlined in their category's colour, and labelled ``"<n> <category>"`` with
    the cell's 1-based position in reading order.
    """
    base = image.convert("RGB")
    width, height = base.size
    short_side = min(width, height)
    line_width = max(1, round(short_side / 400))
    font_size = max(12, round(short_side / 70))
    font = ImageFont.load_default(size=font_size)
    pad = max(2, round(font_size / 6))

    boxes = [image_box(cell.bbox, page, base.size) for cell in page.cells]
    colors = [category_color(cell.category) for cell in page.cells]

    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    fill = ImageDraw.Draw(overlay)
    for box, color in zip(boxes, colors, strict=True):
        fill.rectangle(box, fill=(*color, FILL_ALPHA))
    out = Image.alpha_composite(base.convert("RGBA"), overlay).convert("RGB")

    draw = ImageDraw.Draw(out)
    for box, color in zip(boxes, colors, strict=True):
        draw.rectangle(box, outline=color, width=line_width)

    texts = [f"{n} {cell.category}" for n, cell in enumerate(page.cells, start=1)]
    extents = [font.getbbox(text) for text in texts]
    sizes = [(int(r - left) + 2 * pad, int(b - top) + 2 * pad) for left, top, r, b in extents]
    rects = place_labels(boxes, sizes, width, height)
    for (x1, y1, x2, y2), text, extent, color in zip(rects, texts, extents, colors, strict=True):
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=color)  # Pillow's x2, y2 are inclusive
        origin = (x1 + pad - extent[0], y1 + pad - extent[1])
        draw.text(origin, text, font=font, fill=text_color(color))
    return out
