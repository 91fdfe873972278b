"""PaddleOCR-VL (PaddlePaddle/PaddleOCR-VL, 0.9B): element-level recognition of a page or a
region, with tables as HTML and formulas as LaTeX.

What it does not do: layout. In the official PaddleOCR-VL pipeline a separate detector,
PP-DocLayoutV2, finds the blocks and their reading order, and this model only reads each
block it is given with the prompt for its kind. This profile sends the whole page (or the
requested region) with one prompt, so it gives one cell and no boxes: the pipeline's layout
tasks fall back to "ocr" here, and a page read whole is harder for it than the blocks it was
trained on.

Sources (read 2026):

- Model card and files: https://huggingface.co/PaddlePaddle/PaddleOCR-VL (NaViT-style
  dynamic-resolution encoder + ERNIE-4.5-0.3B, 109 languages; config.json: vision 27 layers,
  1152 wide, MLP 4304, 16 heads, patch 14, spatial_merge_size 2; text 18 layers, hidden 1024,
  MLP 3072, 16 heads, 2 KV heads, head_dim 128, vocab 103,424, untied lm_head,
  max_position_embeddings 131,072; preprocessor_config.json: min_pixels 147,384, max_pixels
  2,822,400, patch_size 14, merge_size 2, temporal_patch_size 1; model.safetensors about
  1.9 GB in bf16).
- The PaddleOCR repository and docs: https://github.com/PaddlePaddle/PaddleOCR
  (docs/version3.x/pipeline_usage/PaddleOCR-VL.en.md: layout by PP-DocLayoutV2, the
  recognition prompts per block kind, tables written in OTSL and turned into HTML by the
  pipeline's ``convert_otsl_to_html``, LaTeX for formulas).
- vLLM's recipe: https://docs.vllm.ai/projects/recipes/en/latest/PaddlePaddle/PaddleOCR-VL.html
  (``vllm serve PaddlePaddle/PaddleOCR-VL --trust-remote-code --max-num-batched-tokens 16384
  --no-enable-prefix-caching --mm-processor-cache-gb 0``; prompts "OCR:", "Table
  Recognition:", "Formula Recognition:", "Chart Recognition:"; temperature 0).
- vLLM's implementation, vllm/model_executor/models/paddleocr_vl.py
  (PaddleOCRVLForConditionalGeneration, supported since 0.11.1): the image's tokens are
  smart_resize(factor 28, the processor's min/max pixels) / 28^2, like Qwen2-VL's sizing.

Sizing: smart_resize with factor 28 (patch 14 x merge 2) and the processor's pixel bounds,
so at most 3,600 image tokens. Our resized image is a fixed point of the server's own
smart_resize (sides are multiples of 28 and the area is within the bounds), so the server
does not resize it again and the token count is known before sending. The one difference of
the model's smart_resize, which first stretches a side shorter than 28 pixels, never applies
to what we send.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from dotsocr.layout import BBox, Cell, PageStatus
from dotsocr.models.base import Geometry, ParsedAnswer
from dotsocr.models.chat import Capabilities, ChatProfile, cut_note, plain_text, text_answer
from dotsocr.models.serving import Decoder, Serving, VisionTower

IMAGE_MARKERS = "<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>"  # its chat template's
PROMPTS: dict[str, str] = {
    "ocr": "OCR:",
    "table": "Table Recognition:",
    "formula": "Formula Recognition:",
    "chart": "Chart Recognition:",
}
"""The recognition prompts the model was trained on, one per kind of block."""

CATEGORIES: dict[str, str] = {"ocr": "Text", "table": "Table", "formula": "Formula"}
"""The cell each task gives; a chart's answer is a data table in Markdown, kept as Text."""

MIN_PIXELS = 147_384
MAX_PIXELS = 2_822_400  # 3,600 tokens of 28 x 28 pixels
RECIPE_MAX_NUM_BATCHED_TOKENS = 16_384  # the recipe's throughput setting, for the planner

CAPABILITIES = Capabilities(
    layout_boxes=False,
    tables="html",
    formulas=True,
    languages="109 languages",
    summary="small and fast element recognition (text, tables, formulas, charts) of a page "
    "or region; no layout boxes: its pipeline runs PP-DocLayoutV2 for those",
)

PADDLEOCR_VL = Serving(
    hub_id="PaddlePaddle/PaddleOCR-VL",
    weight_bytes=1_920_000_000,  # about 0.96B parameters in bf16
    # SigLIP-so400m-shaped NaViT encoder: 1152 wide, MLP 4304, 16 heads, 14-pixel patches,
    # 2 x 2 patches merged by the projector into one language-model token.
    vision=VisionTower(embed_dim=1152, intermediate=4304, heads=16, patch=14, merge=2),
    decoder=Decoder.dense(
        layers=18,
        hidden=1024,
        intermediate=3072,
        kv_heads=2,  # grouped-query attention: 2 x 18 x 2 x 128 x 2 = 18,432 bytes a token
        head_dim=128,
        vocab=103_424,
        heads=16,
    ),
    max_image_tokens=MAX_PIXELS // (28 * 28),
    # Not "max_pixels": vLLM counts tokens with such an override, but the checkpoint's own
    # image processor (trust-remote-code) does not take one, and the two would disagree on a
    # larger image. Clients cap the pixels themselves; the server plans for the model's most.
    pixel_cap_kwarg=None,
    flags={"--trust-remote-code": None},
    flag_reasons={
        "--trust-remote-code": "the recipe's: the checkpoint's image processor and config "
        "(model_type paddleocr_vl) ship with the model",
    },
    # The recipe's --no-enable-prefix-caching and --mm-processor-cache-gb 0 are in every
    # launch plan already; its --max-num-batched-tokens 16384 is a throughput setting that
    # the planner sizes for the card (RECIPE_MAX_NUM_BATCHED_TOKENS).
)


@dataclass
class PaddleOCRVL(ChatProfile):
    """The PaddleOCR-VL profile; every number is a default callers may override
    (``dataclasses.replace``)."""

    name: str = "paddleocr-vl"
    hf_id: str = "PaddlePaddle/PaddleOCR-VL"
    architecture: str = "PaddleOCRVLForConditionalGeneration"
    tasks: tuple[str, ...] = tuple(PROMPTS)
    default_task: str = "ocr"
    factor: int = 28  # patch 14 x spatial merge 2: one visual token per 28x28 pixels
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    temperature: float = 0.0  # the recipe's; the official pipeline decodes greedily too
    top_p: float = 1.0
    max_tokens: int = 8192  # the official pipeline's max_new_tokens
    min_image_tokens: int = 188  # min_pixels / 784: less than that the server enlarges
    serving: Serving | None = PADDLEOCR_VL
    capabilities: Capabilities | None = CAPABILITIES
    prompts: dict[str, str] = field(default_factory=lambda: dict(PROMPTS))

    def request_text(
        self, task: str, geometry: Geometry | None = None, box: BBox | None = None
    ) -> str:
        """As the server counts it: its chat template writes the image's markers before the
        prompt (checked against vLLM: without them the count is 3 tokens short)."""
        return IMAGE_MARKERS + self.prompt(task, geometry, box)

    def message_text(
        self, task: str, geometry: Geometry | None = None, box: BBox | None = None
    ) -> str:
        return self.prompt(task, geometry, box)  # the template adds the markers

    def parse(
        self,
        answer: str,
        geometry: Geometry,
        task: str,
        *,
        finish_reason: str | None = None,
        box: BBox | None = None,
    ) -> ParsedAnswer:
        """One cell over the page (or ``box``): Text, a Table in HTML, or a Formula."""
        notes = cut_note(finish_reason)
        bbox = geometry.full_page if box is None else box
        if task == "table":
            return parse_table(answer, bbox, notes)
        parsed = text_answer(answer, bbox, notes)
        category = CATEGORIES.get(task, "Text")
        if category != "Text":
            parsed.cells = [c.model_copy(update={"category": category}) for c in parsed.cells]
        return parsed


# --- tables -------------------------------------------------------------------------------

_OTSL_TAG = re.compile(r"<(fcel|ecel|lcel|ucel|xcel|nl)>")
_TABLE_OPEN = re.compile(r"<table\b", re.IGNORECASE)
_TABLE_CLOSE = re.compile(r"</table\s*>", re.IGNORECASE)
_ROW_CLOSE = re.compile(r"</tr\s*>", re.IGNORECASE)


def parse_table(answer: str, bbox: BBox, notes: list[str]) -> ParsedAnswer:
    """A table answer in OTSL (or, should it come, HTML) as one Table cell in HTML; words
    without either are kept as text and the page marked as a fallback."""
    text, runs = plain_text(answer, notes)
    cut = "answer cut at the token budget" in notes
    mended = PageStatus.REPAIRED if runs or cut else PageStatus.OK
    if not text:
        notes.append("empty answer")
        return ParsedAnswer([], mended, notes)
    if _TABLE_OPEN.search(text):
        if not _TABLE_CLOSE.search(text):
            rows = list(_ROW_CLOSE.finditer(text))
            if rows:
                text = text[: rows[-1].end()] + "</table>"
                notes.append("unfinished table closed after its last complete row")
                mended = PageStatus.REPAIRED
        return ParsedAnswer([Cell(bbox=bbox, category="Table", text=text)], mended, notes)
    table = otsl_to_html(text)
    if table is None:
        notes.append("table answer had no table structure: kept as plain text")
        return ParsedAnswer(
            [Cell(bbox=bbox, category="Text", text=text)], PageStatus.FALLBACK, notes
        )
    return ParsedAnswer([Cell(bbox=bbox, category="Table", text=table)], mended, notes)


def otsl_to_html(otsl: str) -> str | None:
    """An OTSL table as HTML, or None when ``otsl`` has no OTSL tags.

    OTSL writes a grid row by row, ``<nl>`` ending each row: ``<fcel>`` starts a cell with
    text, ``<ecel>`` an empty one, and ``<lcel>``, ``<ucel>`` and ``<xcel>`` mark a slot
    taken by the cell to the left, above, or both (a spanning cell). Rows are padded to the
    widest; text the model wrote into a taken slot goes to the cell that spans it.
    """
    parts = _OTSL_TAG.split(otsl)
    if len(parts) == 1:
        return None
    rows: list[list[list[str]]] = [[]]  # [tag, text] per slot
    if parts[0].strip():  # words before the first tag start a cell of their own
        rows[0].append(["fcel", parts[0]])
    for tag, text in zip(parts[1::2], parts[2::2], strict=True):
        if tag == "nl":
            rows.append([])
            if text.strip():
                rows[-1].append(["fcel", text])
        else:
            rows[-1].append([tag, text])
    rows = [row for row in rows if row]
    if not rows:
        return None
    width = max(len(row) for row in rows)
    for row in rows:
        row.extend(["ecel", ""] for _ in range(width - len(row)))
    # owner[r][c]: the (row, column) of the cell that fills slot (r, c).
    owner: list[list[tuple[int, int]]] = []
    for r, row in enumerate(rows):
        owner.append([])
        for c, (tag, _) in enumerate(row):
            if tag in ("lcel", "xcel") and c > 0 and (tag == "lcel" or r == 0):
                owner[r].append(owner[r][c - 1])
            elif tag in ("ucel", "xcel") and r > 0:
                owner[r].append(owner[r - 1][c])
            else:
                owner[r].append((r, c))
    texts: dict[tuple[int, int], list[str]] = {}
    for r, row in enumerate(rows):
        for c, (_, text) in enumerate(row):
            if text.strip():
                texts.setdefault(owner[r][c], []).append(text.strip())
    out = ["<table>"]
    for r in range(len(rows)):
        out.append("<tr>")
        for c in range(width):
            if owner[r][c] != (r, c):
                continue
            colspan = 1
            while c + colspan < width and owner[r][c + colspan] == (r, c):
                colspan += 1
            rowspan = 1
            while r + rowspan < len(rows) and owner[r + rowspan][c] == (r, c):
                rowspan += 1
            spans = (f' rowspan="{rowspan}"' if rowspan > 1 else "") + (
                f' colspan="{colspan}"' if colspan > 1 else ""
            )
            content = html.escape(" ".join(texts.get((r, c), [])), quote=False)
            out.append(f"<td{spans}>{content}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)
