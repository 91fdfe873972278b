"""DeepSeek-OCR (deepseek-ai/DeepSeek-OCR): prompts, Gundam-mode sizing, requests and the
grounding parser.

Sources (read 2026; the numbers below are checked against them):

- Model card and config.json: https://huggingface.co/deepseek-ai/DeepSeek-OCR
  (architecture DeepseekOCRForCausalLM, model_type deepseek_vl_v2; language_config:
  12 layers, hidden 1280, 10 heads and 10 KV heads, ``use_mla: false``, ``kv_lora_rank:
  null``, 64 routed + 2 shared experts of 896, 6 routed per token, layer 0 dense with 6848,
  vocab 129,280, max_position_embeddings 8192; vision: SAM ViT-B 768 wide, 12 layers, 12
  heads, patch 16, global attention at layers 2/5/8/11 + CLIP-L 1024 wide, 24 layers;
  one safetensors file of 3,336,106,240 bf16 parameters = 6,672,212,480 bytes).
- The official repository: https://github.com/deepseek-ai/DeepSeek-OCR (README: modes Tiny
  512 / 64 tokens, Small 640 / 100, Base 1024 / 256, Large 1280 / 400, Gundam n x 640 tiles
  + a 1024 global view; DeepSeek-OCR-master/DeepSeek-OCR-vllm/config.py: the prompts, MIN_CROPS
  2, MAX_CROPS 6; run_dpsk_ocr_image.py: ``<|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2]]
  <|/det|>`` boxes scaled back with ``x / 999 * image_width``, so 0-999 over the image sent).
- vLLM's recipe: https://docs.vllm.ai/projects/recipes/en/latest/DeepSeek/DeepSeek-OCR.html
  (``vllm serve deepseek-ai/DeepSeek-OCR --logits_processors
  vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor --no-enable-prefix-caching
  --mm-processor-cache-gb 0``; requests: temperature 0, ``extra_body={"skip_special_tokens":
  False, "vllm_xargs": {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [128821,
  128822]}}``, the whitelist being ``<td>`` and ``</td>``).
- vLLM's implementation (vllm/model_executor/models/deepseek_ocr.py and
  vllm/transformers_utils/processors/deepseek_ocr.py, supported since 0.11): the processor is
  fixed to Gundam mode (BASE_SIZE 1024, IMAGE_SIZE 640, CROP_MODE True, 2-6 tiles; a TODO says
  the other modes are not exposed), and an image costs ``16 x 17 + 1`` tokens for the global
  view plus ``(10 nh) x (10 nw + 1)`` for nw x nh tiles when either side exceeds 640.
- vLLM's chat template for DeepSeek-OCR (template_deepseek_ocr.jinja: BOS + the content, no
  role markers) and its placeholder ``<image>``: a text that already holds ``<image>`` gets
  no second one, so the prompt the model sees is exactly the trained string.

What we send: the page at its own aspect ratio, shrunk (never enlarged) to at most six 640 x
640 tiles' worth of pixels, 2,457,600; the server's processor tiles it and pads a global view.
Pages of at most 640 x 640 cost the global view alone (273 tokens); larger ones 483 to 933
tokens, set by the aspect ratio alone. There is no pixel cap to pass to the server.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any

from dotsocr.errors import PageTooExtreme
from dotsocr.layout import BBox, Cell, PageStatus, normalize_box
from dotsocr.models.base import Geometry, ParsedAnswer
from dotsocr.models.cells import objects_to_cells
from dotsocr.models.chat import Capabilities, ChatProfile, cut_note, plain_text, text_answer
from dotsocr.models.serving import Decoder, Serving, VisionTower

PROMPTS: dict[str, str] = {
    # Layout with boxes: Markdown text, HTML tables, LaTeX formulas, one element at a time.
    "layout_all": "<image>\n<|grounding|>Convert the document to markdown.",
    # The same answer read for its boxes only (the model has no layout-only prompt).
    "layout_only": "<image>\n<|grounding|>Convert the document to markdown.",
    # Plain text without layout.
    "ocr": "<image>\nFree OCR.",
    # Figures inside documents: charts, chemical structures, geometry.
    "figure": "<image>\nParse the figure.",
}
"""The official prompts (config.py of the repository); ``<image>`` is vLLM's placeholder."""

LAYOUT_TASKS = frozenset({"layout_all", "layout_only"})

# Gundam mode, as vLLM's processor runs it.
BASE_SIZE = 1024  # the global view, padded to a square
TILE_SIZE = 640  # each local tile
PATCH_SIZE = 16  # SAM ViT-B patches
DOWNSAMPLE = 4  # the 16x token compressor: 4 patches per side become one token
MIN_TILES = 2
MAX_TILES = 6
_BASE_QUERIES = math.ceil(BASE_SIZE // PATCH_SIZE / DOWNSAMPLE)  # 16 per side
_TILE_QUERIES = math.ceil(TILE_SIZE // PATCH_SIZE / DOWNSAMPLE)  # 10 per side
GLOBAL_VIEW_TOKENS = _BASE_QUERIES * (_BASE_QUERIES + 1) + 1  # rows + newline tokens + separator
# The most: one tile across and six down.
MAX_IMAGE_TOKENS = GLOBAL_VIEW_TOKENS + (_TILE_QUERIES * MAX_TILES) * (_TILE_QUERIES + 1)
GLOBAL_VIEW_PIXELS = TILE_SIZE * TILE_SIZE  # within 640 x 640 a page is not tiled
MAX_SEND_PIXELS = MAX_TILES * TILE_SIZE * TILE_SIZE  # what six tiles resolve; more is wasted
COORDINATE_SCALE = 999  # boxes run 0-999 over the image's width and height

# The n-gram repetition guard of the recipe, switched on per request.
NGRAM_SIZE = 30
NGRAM_WINDOW = 90
TD_TOKEN_IDS = (128821, 128822)  # <td> and </td>: table rows repeat by nature
LOGITS_PROCESSOR = "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"
EXTRA_BODY: dict[str, Any] = {
    # The grounding markers and <td> are special tokens of its tokenizer (the repository
    # decodes with skip_special_tokens=False too): skipping them would erase the layout.
    "skip_special_tokens": False,
    "vllm_xargs": {
        "ngram_size": NGRAM_SIZE,
        "window_size": NGRAM_WINDOW,
        "whitelist_token_ids": list(TD_TOKEN_IDS),
    },
}

# The model's element labels, as its answers write them, in dots.ocr's categories. Seen in
# published answers: title, sub_title, text, table, table_caption, image, image_caption,
# equation. The rest are our guesses at other spellings of the same kinds (OmniDocBench's
# names among them), mapped in case they turn up; anything else is kept as given.
LABELS: dict[str, str] = {
    "title": "Title",
    "sub_title": "Section-header",
    "subtitle": "Section-header",
    "text": "Text",
    "table": "Table",
    "image": "Picture",
    "figure": "Picture",
    "chart": "Picture",
    "image_caption": "Caption",
    "table_caption": "Caption",
    "figure_caption": "Caption",
    "caption": "Caption",
    "image_footnote": "Footnote",
    "table_footnote": "Footnote",
    "footnote": "Footnote",
    "equation": "Formula",
    "formula": "Formula",
    "header": "Page-header",
    "page_header": "Page-header",
    "footer": "Page-footer",
    "page_footer": "Page-footer",
    "page_number": "Page-footer",
    "list": "List-item",
    "list_item": "List-item",
}

CAPABILITIES = Capabilities(
    layout_boxes=True,
    tables="html",
    formulas=True,
    languages="about 100 languages, strongest on English and Chinese",
    summary="layout, Markdown text, HTML tables and LaTeX in one pass at 273-933 vision "
    "tokens a page; an 8k context",
)

# 12 layers x (q, k, v, o: 4 x 1280x1280) + layer 0's dense MLP (3 x 1280x6848) + 11 MoE
# layers x (64 experts x 3 x 1280x896 + shared experts 3 x 1280x1792 + router 1280x64).
_LINEAR_PARAMS = (
    12 * 4 * 1280 * 1280
    + 3 * 1280 * 6848
    + 11 * (64 * 3 * 1280 * 896 + 3 * 1280 * 1792 + 1280 * 64)
)

DEEPSEEK_OCR = Serving(
    hub_id="deepseek-ai/DeepSeek-OCR",
    weight_bytes=6_672_212_480,  # 3,336,106,240 parameters in bf16, one safetensors file
    # The SAM ViT-B half sets the peak: 768 wide, MLP 3072, 12 heads, 16-pixel patches, and
    # its compressor merges 4 x 4 patches into one token. Its windowed layers attend within
    # 14 x 14 windows and its global ones within one view, so without flash attention the
    # planner's patches-squared term over all views together overstates the score matrices.
    vision=VisionTower(embed_dim=768, intermediate=3072, heads=12, patch=PATCH_SIZE, merge=4),
    decoder=Decoder(
        layers=12,
        hidden=1280,
        # Per token: 6 routed experts of 896 and the shared 2 x 896 (layer 0's dense MLP is
        # 6848): the widest activation a prefill token holds.
        intermediate=8 * 896,
        # Plain multi-head attention: config.json sets use_mla false and kv_lora_rank null,
        # and the checkpoint has q/k/v/o projections of 1280 x 1280, not MLA's compressed
        # latent. So the KV cache is K and V for 12 layers x 10 heads x 128 dims:
        # 2 x 12 x 10 x 128 x 2 bytes = 61,440 bytes a token in bf16 (an MLA model would
        # instead cache kv_lora_rank + qk_rope_head_dim values per layer, once for all heads).
        kv_heads=10,
        head_dim=128,
        vocab=129_280,
        linear_params=_LINEAR_PARAMS,
    ),
    max_image_tokens=MAX_IMAGE_TOKENS,  # 933
    # What the encoder reads at most (a 1024 global view and six 640 tiles), per token.
    pixels_per_token=(BASE_SIZE * BASE_SIZE + MAX_SEND_PIXELS) // MAX_IMAGE_TOKENS,
    pixel_cap_kwarg=None,  # Gundam mode takes no pixel cap: the tiles follow the aspect ratio
    max_context=8192,  # max_position_embeddings of its language model
    flags={"--logits-processors": LOGITS_PROCESSOR},
    flag_reasons={
        "--logits-processors": "the recipe's n-gram repetition guard (no 30-gram twice within "
        "90 tokens, <td></td> exempt), which each request switches on through vllm_xargs; "
        "the recipe calls it important for DeepSeek-OCR's output",
    },
    # The recipe's --no-enable-prefix-caching and --mm-processor-cache-gb 0 are in every
    # launch plan already (serve/plan.py), so they are not repeated here.
)


@dataclass
class DeepSeekOCR(ChatProfile):
    """The DeepSeek-OCR profile in Gundam mode; every number is a default callers may
    override (``dataclasses.replace``)."""

    name: str = "deepseek-ocr"
    hf_id: str = "deepseek-ai/DeepSeek-OCR"
    architecture: str = "DeepseekOCRForCausalLM"
    tasks: tuple[str, ...] = tuple(PROMPTS)
    default_task: str = "layout_all"
    factor: int = PATCH_SIZE  # not used: Gundam tiling, not smart_resize, sizes the image
    server_smart_resizes: bool = False  # Gundam tiling: served_size does not apply
    min_pixels: int = 1
    max_pixels: int = MAX_SEND_PIXELS
    temperature: float = 0.0  # the recipe's and the repository's
    top_p: float = 1.0
    max_tokens: int = 8192  # the repository's budget; the planner fits it into the 8k context
    min_image_tokens: int = GLOBAL_VIEW_TOKENS  # the least any image costs
    extra_body: dict[str, Any] = field(
        default_factory=lambda: {
            "skip_special_tokens": EXTRA_BODY["skip_special_tokens"],
            "vllm_xargs": dict(EXTRA_BODY["vllm_xargs"]),
        }
    )
    serving: Serving | None = DEEPSEEK_OCR
    capabilities: Capabilities | None = CAPABILITIES
    prompts: dict[str, str] = field(default_factory=lambda: dict(PROMPTS))

    # Sizing.
    def model_size(self, width: int, height: int, max_pixels: int | None = None) -> tuple[int, int]:
        """The (width, height) we send: the page's aspect ratio within the pixel budget.

        A budget below two tiles' worth keeps the page within 640 x 640, where only the
        global view is read; otherwise the page shrinks to the budget's area. Nothing is
        enlarged: the server's processor scales for itself.
        """
        if width <= 0 or height <= 0:
            raise PageTooExtreme(f"image of {width}x{height} pixels has no area")
        cap = min(max_pixels or self.max_pixels, self.max_pixels)
        if cap < MIN_TILES * GLOBAL_VIEW_PIXELS:
            scale = min(1.0, TILE_SIZE / width, TILE_SIZE / height)
            return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
        if width * height <= cap:
            return width, height
        scale = math.sqrt(cap / (width * height))
        w, h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
        while w * h > cap:  # floating point can land a pixel over
            w, h = (w - 1, h) if w >= h else (w, h - 1)
        return w, h

    def image_tokens(self, width: int, height: int, max_pixels: int | None = None) -> int:
        """Visual tokens an image of this size costs once we have sized it."""
        return gundam_tokens(*self.model_size(width, height, max_pixels))

    def tokens_for_pixels(self, tokens: int) -> int:
        """The pixel cap that costs at most ``tokens``: the full budget from 933 tokens
        (six tiles, the most any page costs), else the global view alone (273)."""
        return self.max_pixels if tokens >= MAX_IMAGE_TOKENS else GLOBAL_VIEW_PIXELS

    # Requests.
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
        notes = cut_note(finish_reason)
        answer = strip_end_marker(answer)
        if task in LAYOUT_TASKS:
            return parse_grounding(answer, geometry, task != "layout_only", finish_reason, notes)
        return text_answer(answer, geometry.full_page if box is None else box, notes)


def gundam_tiles(width: int, height: int) -> tuple[int, int]:
    """Tiles across and down for an image of this size, as vLLM's processor picks them:
    none (1, 1) within 640 x 640, else the 2-6 tile grid closest to the aspect ratio (ties
    go to the larger grid when the image fills more than half of it)."""
    if width <= TILE_SIZE and height <= TILE_SIZE:
        return 1, 1
    grids = sorted(
        {
            (across, down)
            for across in range(1, MAX_TILES + 1)
            for down in range(1, MAX_TILES + 1)
            if MIN_TILES <= across * down <= MAX_TILES
        },
        key=lambda grid: grid[0] * grid[1],
    )
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for across, down in grids:
        diff = abs(aspect - across / down)
        if diff < best_diff:
            best, best_diff = (across, down), diff
        elif diff == best_diff and width * height > 0.5 * TILE_SIZE * TILE_SIZE * across * down:
            best = (across, down)
    return best


def gundam_tokens(width: int, height: int) -> int:
    """Image tokens vLLM gives an image of exactly this size."""
    across, down = gundam_tiles(width, height)
    if across == down == 1:
        return GLOBAL_VIEW_TOKENS
    return GLOBAL_VIEW_TOKENS + (_TILE_QUERIES * down) * (_TILE_QUERIES * across + 1)


# --- answers ----------------------------------------------------------------------------

_HEADER = re.compile(r"<\|ref\|>(.*?)<\|/ref\|>\s*<\|det\|>(.*?)<\|/det\|>", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_END_MARKERS = ("<｜end▁of▁sentence｜>", "<|end▁of▁sentence|>")
_CENTER = re.compile(r"^<center>\s*(.*?)\s*</center>$", re.DOTALL)
_TABLE_OPEN = re.compile(r"<table\b", re.IGNORECASE)
_TABLE_CLOSE = re.compile(r"</table\s*>", re.IGNORECASE)
_ROW_CLOSE = re.compile(r"</tr\s*>", re.IGNORECASE)

MERGED_BOXES = "cell(s) with several boxes merged into one"
MOVED_TABLE = "table HTML moved out of the caption that followed it"
HARMLESS = ("unknown category", MOVED_TABLE)


def strip_end_marker(answer: str) -> str:
    """The answer without the end-of-sentence token that skip_special_tokens=False lets
    through."""
    for marker in _END_MARKERS:
        answer = answer.replace(marker, "")
    return answer


@dataclass
class _Element:
    label: str
    det: str
    body: str


def parse_grounding(
    answer: str, geometry: Geometry, with_text: bool, finish_reason: str | None, notes: list[str]
) -> ParsedAnswer:
    """``<|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2]]<|/det|>`` headers, each followed by
    that element's text, as cells in page pixels. Never raises."""
    headers = list(_HEADER.finditer(answer))
    if not headers:
        return _as_text(answer, geometry, notes)
    before = len(notes)
    elements = [
        _Element(m.group(1).strip(), m.group(2), answer[m.end() : end])
        for m, end in zip(headers, [h.start() for h in headers[1:]] + [len(answer)], strict=True)
    ]
    last = elements[-1]
    begun = last.body.find("<|ref|>")
    if begun >= 0:  # the budget ran out inside the next header
        last.body = last.body[:begun]
        notes.append("unfinished last cell dropped")
    _reattach_tables(elements, notes)
    truncated = finish_reason == "length"
    objects: list[dict[str, Any]] = []
    preamble = answer[: headers[0].start()].strip()
    if preamble:
        notes.append("text before the first element kept over the whole page")
        objects.append(_object(geometry.model_size, "Text", "[[0, 0, 999, 999]]", preamble))
    merged = closed = 0
    for element in elements:
        category = LABELS.get(element.label.lower(), element.label)
        text: str | None = _clean(element.body)
        if _TABLE_OPEN.search(text) and not _TABLE_CLOSE.search(text):
            closed += 1
            text = _close_table(text, notes)
        merged += len(_NUMBER.findall(element.det)) > 4
        objects.append(_object(geometry.model_size, category, element.det, text))
    if merged:
        notes.append(f"{merged} {MERGED_BOXES}")
    if truncated and begun < 0 and not closed and _clean(elements[-1].body):
        notes.append("last cell's text cut short")
    cells = objects_to_cells(
        objects, geometry, with_text=with_text, notes=notes, truncated=truncated
    )
    if not cells:
        words = "\n\n".join(filter(None, (_clean(e.body) for e in elements)))
        return _as_text(words, geometry, notes)
    lossy = [n for n in notes[before:] if not n.startswith(HARMLESS) and MERGED_BOXES not in n]
    status = PageStatus.REPAIRED if lossy or truncated else PageStatus.OK
    return ParsedAnswer(cells, status, notes)


def _object(size: tuple[int, int], category: str, det: str, text: str | None) -> dict[str, Any]:
    """One element as an answer object for ``objects_to_cells``: its box from 0-999 into the
    pixels of the image we sent (several boxes: their union; none readable: no bbox)."""
    numbers = [float(n) for n in _NUMBER.findall(det)]
    obj: dict[str, Any] = {"category": category, "text": text or None}
    if numbers and len(numbers) % 4 == 0:
        quads = zip(*[iter(numbers)] * 4, strict=True)
        boxes = [normalize_box(quad) for quad in quads]
        x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        sx, sy = size[0] / COORDINATE_SCALE, size[1] / COORDINATE_SCALE
        obj["bbox"] = [x1 * sx, y1 * sy, x2 * sx, y2 * sy]
    return obj


def _clean(body: str) -> str:
    """An element's text: stripped, with the ``<center>`` the model wraps captions in removed."""
    text = body.strip()
    match = _CENTER.match(text)
    return match.group(1) if match else text


def _reattach_tables(elements: list[_Element], notes: list[str]) -> None:
    """The model often writes a table's header, then its caption's header and text, and only
    then the table's HTML: give the HTML back to the table."""
    moved = 0
    for table, caption in itertools.pairwise(elements):
        if LABELS.get(table.label.lower()) != "Table" or table.body.strip():
            continue
        start = _TABLE_OPEN.search(caption.body)
        if start is None or LABELS.get(caption.label.lower()) == "Table":
            continue
        table.body, caption.body = caption.body[start.start() :], caption.body[: start.start()]
        moved += 1
    if moved:
        notes.append(f"{MOVED_TABLE} ({moved})")


def _close_table(html: str, notes: list[str]) -> str | None:
    """An unfinished HTML table ended after its last complete row; None (a table cell with
    its box but no text) if it has none."""
    rows = list(_ROW_CLOSE.finditer(html))
    if not rows:
        notes.append("unfinished table without a complete row: its text dropped")
        return None
    notes.append("unfinished table closed after its last complete row")
    return html[: rows[-1].end()] + "</table>"


def _as_text(answer: str, geometry: Geometry, notes: list[str]) -> ParsedAnswer:
    """A layout prompt answered without grounding headers: keep the words as one text cell."""
    text, _ = plain_text(answer, notes)
    if not text:
        notes.append("empty answer to a layout prompt")
        return ParsedAnswer([], PageStatus.FALLBACK, notes)
    notes.append("answer had no grounded elements: kept as plain text")
    return ParsedAnswer(
        [Cell(bbox=geometry.full_page, category="Text", text=text)], PageStatus.FALLBACK, notes
    )
