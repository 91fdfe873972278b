"""Phi-3.5-vision (microsoft/Phi-3.5-vision-instruct): a 4.2B general vision-language model
that reads a page's text when asked; no boxes, no formatting. A small baseline.

Facts and where they come from:

- Model card (https://huggingface.co/microsoft/Phi-3.5-vision-instruct): 4.2B parameters
  (Phi-3-mini decoder and a CLIP image encoder), 128K context, intended for English; the
  chat format ``<|user|>\\n<|image_1|>\\n{prompt}<|end|>\\n<|assistant|>\\n``; greedy
  generation (``temperature 0.0``, ``do_sample False``); "for best performance, use
  num_crops=4 for multi-frame, num_crops=16 for single-frame", while the checkpoint's
  preprocessor_config.json defaults to ``num_crops: 4`` (read through a copy that keeps
  Microsoft's auto_map:
  https://huggingface.co/helenai/Phi-3.5-vision-instruct-ov-fp16/blob/main/preprocessor_config.json).
  No official AWQ, GPTQ or FP8 checkpoint (Microsoft publishes ONNX int4 builds, which
  vLLM does not load).
- https://huggingface.co/microsoft/Phi-3.5-vision-instruct/blob/main/config.json:
  ``Phi3VForCausalLM``, model_type ``phi3_v`` with ``auto_map`` to code in the
  repository; hidden 3072, 32 layers, 32 heads and 32 KV heads (head dim 96), MLP 8192,
  vocabulary 32,064, 131,072 positions; ``img_processor``:
  openai/clip-vit-large-patch14-336, 144 tokens per crop. Read through copies of it:
  https://huggingface.co/FusionQuill/Phi-3.5-vision-instruct-onnx-cpu-dml/blob/main/config.json
  and MLC's phi3_5-vision config (``head_dim 96``, ``vocab_size 32064``).
- The HD transform (the repository's processing_phi3_v.py, mirrored by Transformers'
  https://github.com/huggingface/transformers/blob/main/src/transformers/models/phi3_v/image_processing_phi3_v.py,
  ``HD_transform``, ``calc_hd_transform_size``, ``calc_num_image_tokens_from_image_size``):
  the image is turned so that it is wide (w >= h), ``ratio = w / h``; ``scale`` is the
  largest s with ``s * ceil(s / ratio) <= num_crops``; it is resized to width
  ``336 * scale`` and height ``int(336 * scale / ratio)``, padded white (centred) to a
  multiple of 336, and turned back. For the padded H x W, with R = H / 336 rows and
  C = W / 336 columns of crops, the image costs

      tokens = (R * C + 1) * 144 + 1 + (R + 1) * 12

  144 per crop and for the 336x336 global view (CLIP ViT-L/14 at 336: 24x24 patches merged
  2x2), a newline token after each of the 12 * R crop rows and the 12 global rows, and
  one separator. E.g. 1700x2200 at 16 crops: resized 1038x1344, padded 1344x1344 (4x4),
  2,509 tokens; at 4 crops: 519x672, padded 672x672, 757 tokens. 800x600 at 16 crops:
  1344x1008 (3 rows, 4 columns), 1,921 tokens; at 4 crops 672x504, padded 672x672, 757.
  The most: a page 16 times taller than wide, 16x1 crops, 2,653 tokens at 16 crops (781
  at 4).
- The vision tower, as vLLM builds it: CLIP ViT-L/14-336 (1024 wide, MLP 4096, 16 heads,
  patch 14, 24 layers of which 23 are used), 2x2 merge, a 2-layer MLP projector into 3072:
  https://github.com/vllm-project/vllm/blob/main/vllm/model_executor/models/phi3v.py
- vLLM serves ``Phi3VForCausalLM`` natively (``_MULTIMODAL_MODELS`` in
  https://github.com/vllm-project/vllm/blob/main/vllm/model_executor/models/registry.py,
  present in 0.32.0's, whose phi3v.py counts tokens with the checkpoint processor's
  ``calc_num_image_tokens_from_image_size``; listed in
  ``dotsocr.serve.cache.VLLM_ARCHITECTURES``); its
  example runs it with ``trust_remote_code=True``, ``mm_processor_kwargs={"num_crops":
  16}``, ``limit_mm_per_prompt={"image": 1}`` and ``max_model_len=4096``:
  https://github.com/vllm-project/vllm/blob/main/examples/offline_inference/vision_language.py
  (``run_phi3v``). A chat request may carry ``mm_processor_kwargs`` too ("Additional
  kwargs to pass to the HF processor": vLLM 0.32's
  vllm/entrypoints/openai/chat_completion/protocol.py).

Choices of ours:

- The prompt is ours (the model card has no OCR prompt): a plain transcript in reading
  order, nothing else. The only task is ``ocr``; the pipeline's layout request falls back
  to it. The answer is one Text cell over the page.
- The page is resized here to the HD transform's size (not padded: the server pads, and
  the geometry stays a plain scale); its tokens are counted as the server counts them on
  the image we send. A smaller budget than the page needs (``plan``) is met with fewer
  crops, and every request says its crop count in ``mm_processor_kwargs``, so the server
  cuts the page as planned whatever its own default.
- 4096 answer tokens: a dense page is 1-2k; the model card's example stops at 1000.
- ``--limit-mm-per-prompt {"image": 1}`` (one page per request, so vLLM reserves encoder
  memory for one image of up to 2,653 tokens rather than several) is not among the flags
  below: the launch planner gives it to every model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from PIL import Image

from dotsocr.errors import ConfigError, PageTooExtreme
from dotsocr.layout import BBox
from dotsocr.models.base import Geometry, ParsedAnswer, PreparedPage
from dotsocr.models.chat import Capabilities, ChatProfile
from dotsocr.models.got_ocr import read_text
from dotsocr.models.serving import Decoder, Serving, VisionTower

HUB_ID = "microsoft/Phi-3.5-vision-instruct"
ARCHITECTURE = "Phi3VForCausalLM"

CROP = 336  # CLIP ViT-L/14-336 input side
CROP_TOKENS = 144  # 24x24 patches merged 2x2
ROW_TOKENS = 12  # token rows per crop, each followed by a newline token
PIXELS_PER_TOKEN = CROP * CROP // CROP_TOKENS  # 28x28
NUM_CROPS = 16  # the model card's advice for one image per prompt
MAX_IMAGE_TOKENS = 2653  # 16x1 crops: (16 + 1) * 144 + 1 + 17 * 12
MIN_IMAGE_TOKENS = 313  # one crop: (1 + 1) * 144 + 1 + 2 * 12

PROMPT = (
    "Transcribe all the text in this image exactly as written, in reading order. "
    "Output only the text."
)
STOP_TOKENS = ("<|end|>", "<|endoftext|>")  # left in by servers that keep special tokens

SERVED_BY = "vLLM (native Phi3VForCausalLM, with --trust-remote-code)"
CAPABILITIES = Capabilities(
    layout_boxes=False,
    tables="",
    formulas=False,
    languages="English",
    summary="4.2B general vision-language model: a page's plain text, no boxes; a baseline",
)

PHI35_VISION = Serving(
    hub_id=HUB_ID,
    weight_bytes=8_293_000_000,  # about 4.15B parameters in bf16
    # CLIP attends within each 336 crop: the planner's whole-image attention term
    # (no flash attention) overstates this tower's activations.
    vision=VisionTower(embed_dim=1024, intermediate=4096, heads=16, patch=14, merge=2),
    decoder=Decoder.dense(
        layers=32,
        hidden=3072,
        intermediate=8192,
        kv_heads=32,
        head_dim=96,
        vocab=32_064,
    ),
    max_image_tokens=MAX_IMAGE_TOKENS,
    pixels_per_token=PIXELS_PER_TOKEN,
    pixel_cap_kwarg=None,  # the processor takes a crop count, not a pixel cap
    flags={
        "--trust-remote-code": None,
        "--mm-processor-kwargs": json.dumps({"num_crops": NUM_CROPS}),
    },
    flag_reasons={
        "--trust-remote-code": "the checkpoint's config (Phi3VConfig) and its processor "
        "(Phi3VProcessor, the HD transform) are code in the model repository (auto_map)",
        "--mm-processor-kwargs": "the checkpoint's processor defaults to 4 crops (for "
        "several images); one page reads best with 16 (model card), and vLLM sizes its "
        "encoder cache and profiling run by this server-wide setting",
    },
)


@dataclass
class Phi35Vision(ChatProfile):
    """The Phi-3.5-vision profile; every number is a default that callers may override."""

    name: str = "phi-3.5-vision"
    hf_id: str = HUB_ID
    architecture: str = ARCHITECTURE
    tasks: tuple[str, ...] = ("ocr",)
    default_task: str = "ocr"
    factor: int = 28  # pixels per visual token side: patch 14 x merge 2
    server_smart_resizes: bool = False  # the HD transform's crops: served_size does not apply
    max_pixels: int = MAX_IMAGE_TOKENS * PIXELS_PER_TOKEN  # the 16-crop maximum, in pixels
    temperature: float = 0.0  # greedy, as the model card
    top_p: float = 1.0
    max_tokens: int = 4096
    min_image_tokens: int = MIN_IMAGE_TOKENS  # no image costs less
    serving: Serving | None = PHI35_VISION
    capabilities: Capabilities | None = CAPABILITIES
    served_by: str = SERVED_BY
    num_crops: int = NUM_CROPS  # 16 for one image (model card); 4 halves a page's tokens

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_crops < 1:
            raise ConfigError("num_crops must be at least 1")

    # Sizing.
    def crops_for(self, width: int, height: int, max_pixels: int | None = None) -> int:
        """The most crops, up to ``num_crops``, whose tokens fit the pixel budget (1 when
        none does)."""
        budget = min(max_pixels or self.max_pixels, self.max_pixels) // PIXELS_PER_TOKEN
        for crops in range(self.num_crops, 1, -1):
            if server_tokens(*hd_resize(width, height, crops), crops) <= budget:
                return crops
        return 1

    def model_size(self, width: int, height: int, max_pixels: int | None = None) -> tuple[int, int]:
        """The HD transform's resized size, before the server pads it to 336s."""
        return hd_resize(width, height, self.crops_for(width, height, max_pixels))

    def image_tokens(self, width: int, height: int, max_pixels: int | None = None) -> int:
        """What the server counts for the image we send for a page of this size."""
        crops = self.crops_for(width, height, max_pixels)
        return server_tokens(*hd_resize(width, height, crops), crops)

    def tokens_for_pixels(self, tokens: int) -> int:
        return tokens * PIXELS_PER_TOKEN

    def prepare(
        self,
        image: Image.Image,
        width: int,
        height: int,
        max_pixels: int | None = None,
        dpi: float | None = None,
    ) -> PreparedPage:
        crops = self.crops_for(image.width, image.height, max_pixels)
        w, h = hd_resize(image.width, image.height, crops)
        resized = image if image.size == (w, h) else image.resize((w, h), Image.Resampling.BICUBIC)
        geometry = Geometry(width, height, w, h)
        return PreparedPage(resized, geometry, server_tokens(w, h, crops), dpi)

    # Requests.
    def prompt(self, task: str, geometry: Geometry | None = None, box: BBox | None = None) -> str:
        self.check_task(task)
        return PROMPT

    def request_extra(self, page: PreparedPage, task: str) -> dict[str, Any]:
        return {
            **super().request_extra(page, task),
            "mm_processor_kwargs": {"num_crops": self.crops_sent(page)},
        }

    def crops_sent(self, page: PreparedPage) -> int:
        """The crop count that makes the server cut the prepared image into the tokens
        planned for it."""
        w, h = page.geometry.model_size
        fitting = [
            n for n in range(1, self.num_crops + 1) if server_tokens(w, h, n) <= page.image_tokens
        ]
        return max(fitting, default=self.num_crops)

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
        return read_text(answer, geometry.full_page, finish_reason, stop_tokens=STOP_TOKENS)


def hd_resize(width: int, height: int, crops: int) -> tuple[int, int]:
    """(width, height) of an image after the HD transform's resize, before its padding:
    the processor's own float arithmetic, so that sizes agree to the pixel."""
    if width <= 0 or height <= 0:
        raise PageTooExtreme(f"image of {width}x{height} pixels has no area")
    turned = width < height
    long, short = (height, width) if turned else (width, height)
    ratio = long / short
    scale = 1
    while scale * math.ceil(scale / ratio) <= crops:
        scale += 1
    scale -= 1
    long_side = scale * CROP
    short_side = int(long_side / ratio)
    if short_side < 1:
        raise PageTooExtreme(
            f"a page of {width}x{height} is too thin for the model: crop or split it"
        )
    return (short_side, long_side) if turned else (long_side, short_side)


def hd_canvas(width: int, height: int, crops: int) -> tuple[int, int]:
    """(width, height) of the padded HD image the processor makes of an image this size."""
    w, h = hd_resize(width, height, crops)
    if width < height:
        return -(-w // CROP) * CROP, h
    return w, -(-h // CROP) * CROP


def canvas_tokens(width: int, height: int) -> int:
    """Tokens of a padded HD image: 144 per crop and for the global view, a newline per
    token row, one separator."""
    rows, columns = height // CROP, width // CROP
    return (rows * columns + 1) * CROP_TOKENS + 1 + (rows + 1) * ROW_TOKENS


def server_tokens(width: int, height: int, crops: int) -> int:
    """What the server's processor counts for an image of this size at ``crops``."""
    return canvas_tokens(*hd_canvas(width, height, crops))
