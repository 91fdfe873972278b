"""Write a tiny model folder of the PaddleOCR-VL architecture, with no weights.

vLLM serves it with ``--load-format dummy`` (random weights), so that the real server's
PaddleOCRVLForConditionalGeneration, its image processing, chat template handling and
token accounting run without a download. Run with the vLLM venv's Python (it needs
``tokenizers``)::

    .venv-vllm/bin/python tests/vllm_support/tiny_paddleocr_vl_model.py OUT_DIR

No remote code: the published checkpoint ships its own config, processor and image
processor classes for ``--trust-remote-code``, but transformers 5 knows ``model_type``
``paddleocr_vl`` itself (PaddleOCRVLConfig, PaddleOCRVLProcessor,
PaddleOCRVLImageProcessor), and vLLM 0.32 reads the pixel bounds from those classes when
the server does not trust remote code (``size`` {shortest_edge, longest_edge}) and from the
remote ones when it does (``min_pixels``, ``max_pixels``). This folder is for a server
started without ``--trust-remote-code``: with it, vLLM 0.32 fails at startup (the built-in
image processor has no ``max_pixels`` attribute).

What the folder holds, and why (the shapes are shrunk; everything the processor and the
template do is the published checkpoint's):

- ``config.json``: ``PaddleOCRVLForConditionalGeneration`` with this tokenizer's ids for
  the image placeholder and its start and end markers, a 2-layer ERNIE-4.5 text model
  (hidden 128, head dim 64; ``mrope_section`` adds up to half the head dimension) and a
  2-layer SigLIP-style vision tower with the checkpoint's patch 14 and spatial merge 2.
- ``preprocessor_config.json``: the checkpoint's pixel bounds (min 147,384, max 2,822,400),
  patch 14, merge 2 and temporal patch 1.
- a tokenizer whose special tokens are the checkpoint's markers, with
  ``<|IMAGE_PLACEHOLDER|>`` as its ``image_token`` (the processor asks the tokenizer for it).
- a chat template that renders like the checkpoint's: ``<|begin_of_sentence|>``, a user
  turn as ``User: `` then one ``<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>`` per
  image part, then the text parts, then a newline; the generation prompt ``Assistant:``.
  Its loops over the parts make vLLM hand it the content as a list of parts, a string
  content included (as one text part).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tiny_common import train_tokenizer, write_json

BOS = "<|begin_of_sentence|>"
EOS = "</s>"
IMAGE = "<|IMAGE_PLACEHOLDER|>"
IMAGE_MARKER = f"<|IMAGE_START|>{IMAGE}<|IMAGE_END|>"
SPECIAL_TOKENS = [
    "<unk>",
    BOS,
    EOS,
    "<|end_of_sentence|>",
    "<|IMAGE_START|>",
    IMAGE,
    "<|IMAGE_END|>",
    "<|VIDEO_PLACEHOLDER|>",
]
CHAT_TEMPLATE = (
    (
        "{{- 'BOS' -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}{{ 'User: ' }}"
        "{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'image' -%}MARKER{%- endif -%}"
        "{%- endfor -%}"
        "{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{{ '\\n' }}"
        "{%- elif message['role'] == 'assistant' -%}{{ 'Assistant: ' }}"
        "{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}EOS"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ 'Assistant:\\n' }}{%- endif -%}"
    )
    .replace("BOS", BOS)
    .replace("MARKER", IMAGE_MARKER)
    .replace("EOS", EOS)
)
TRAINING_TEXT = [
    "User: OCR:\nAssistant:\n",
    "Table Recognition: Formula Recognition: Chart Recognition:",
    "<fcel>Item<fcel>Qty<nl><fcel>Pens<ecel><nl> \\frac{a}{b} = \\sum_{i=1}^{n} x_i^2",
    "Invoice No. 4711 Date: 2025-03-01 Total: 118.00 EUR | Year | Sales | 0123456789",
]
TEXT = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
    "use_bias": False,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 500000.0,
        "mrope_section": [8, 12, 12],  # adds up to 64 / 2
    },
}
VISION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_channels": 3,
    "image_size": 384,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
PROCESSOR = {
    "image_processor_type": "PaddleOCRVLImageProcessor",
    "processor_class": "PaddleOCRVLProcessor",
    "min_pixels": 147384,
    "max_pixels": 2822400,
    "patch_size": 14,
    "temporal_patch_size": 1,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "do_resize": True,
    "do_convert_rgb": True,
}


def build_tokenizer(folder: Path) -> dict[str, int]:
    return train_tokenizer(folder, SPECIAL_TOKENS, TRAINING_TEXT, unk="<unk>")


def build(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ids = build_tokenizer(folder)
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    vocab_size = max(len(vocab), max(ids.values()) + 1)
    bos, eos, pad = ids[BOS], ids[EOS], ids["<unk>"]
    write_json(
        folder / "config.json",
        {
            "architectures": ["PaddleOCRVLForConditionalGeneration"],
            "model_type": "paddleocr_vl",
            "torch_dtype": "float32",
            "tie_word_embeddings": False,
            "text_config": {
                **TEXT,
                "model_type": "paddleocr_vl_text",
                "vocab_size": vocab_size,
                "bos_token_id": bos,
                "eos_token_id": eos,
                "pad_token_id": pad,
                "tie_word_embeddings": False,
            },
            "vision_config": {**VISION, "model_type": "paddleocr_vl_vision"},
            "image_token_id": ids[IMAGE],
            "video_token_id": ids["<|VIDEO_PLACEHOLDER|>"],
            "vision_start_token_id": ids["<|IMAGE_START|>"],
            "vision_end_token_id": ids["<|IMAGE_END|>"],
        },
    )
    write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "unk_token": "<unk>",
            "pad_token": "<unk>",
            "extra_special_tokens": {"image_token": IMAGE},
            "model_max_length": 32768,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    write_json(folder / "preprocessor_config.json", PROCESSOR)
    write_json(
        folder / "generation_config.json",
        {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad},
    )
    return folder


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
