"""Write a tiny model folder of the Qwen2.5-VL or Qwen3-VL architecture, with no weights.

vLLM serves it with ``--load-format dummy`` (random weights), so that the real server's
Qwen-VL request path, image processor, chat template handling and token accounting run
without a download. ``model_type`` ``qwen2_5_vl`` and ``qwen3_vl`` are known to
transformers and vLLM, so, unlike the tiny dots.ocr folder, it needs no remote code. Run
with the vLLM venv's Python (it needs ``tokenizers``)::

    .venv-vllm/bin/python tests/vllm_support/tiny_qwen_vl_model.py OUT_DIR [qwen3-vl]

What the folder holds, and why (the shapes are shrunk; everything the processor and the
template do is the real checkpoint's):

- ``config.json``: ``Qwen2_5_VLForConditionalGeneration`` with the real checkpoint's
  special token ids replaced by this tokenizer's, a 2-layer text model (hidden 128) and
  a 2-block vision tower whose ``out_hidden_size`` equals the text hidden size.
  ``mrope_section`` must add up to half the text head dimension (64 / 2 = 32).
- ``preprocessor_config.json``: ``Qwen2VLImageProcessor`` with patch 14, merge 2,
  temporal patch 2 and the published pixel budget (min 3136, max 12845056), and CLIP's
  mean and std, as Qwen/Qwen2.5-VL-7B-Instruct ships it. Qwen3-VL: patch 16, the budget
  as ``size`` {shortest_edge 65536, longest_edge 16777216}, mean and std 0.5, and a video
  processor config of its own, as Qwen/Qwen3-VL-8B-Instruct ships them.
- a chat template that renders like the checkpoint's: a default system turn ("You are a
  helpful assistant.") when the chat has none (Qwen2.5-VL only),
  ``<|im_start|>role\\n...<|im_end|>\\n`` turns, an image part as
  ``<|vision_start|><|image_pad|><|vision_end|>`` with no newline around it, and a string
  content as is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tiny_common import train_tokenizer, write_json

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
DEFAULT_SYSTEM = (
    "{%- if loop.first and message['role'] != 'system' -%}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif -%}"
)
# A tag right after a newline opens with "{%", not "{%-", which would strip the newline.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "%(system)s"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif 'text' in part -%}{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "<|im_end|>\n"
    "{% endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{% endif -%}"
)
TRAINING_TEXT = [
    "You are a helpful assistant. QwenVL HTML",
    "Convert this document image to Markdown in reading order: tables as HTML, formulas "
    "as LaTeX. Output only the content of the page, without any additional descriptions.",
    "Outline the position of every layout element on this document page and output all "
    'the coordinates in JSON format: [{"bbox_2d": [x1, y1, x2, y2], "label": "text"}]',
    'Read the text inside the box {"bbox_2d": [10, 20, 30, 40]} and output only that text.',
    '<html><body><h1 data-bbox="1 2 3 4">Title</h1><p data-bbox="5 6 7 8">Hello 0123456789'
    "</p></body></html>",
]
TEXT = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,  # head dim 64
    "num_key_value_heads": 1,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]},  # adds up to 64 / 2
    "use_sliding_window": False,
}
VISION = {
    "depth": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_heads": 2,
    "in_channels": 3,
    "hidden_act": "silu",
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [1],
    "out_hidden_size": 128,  # must equal the text hidden size
    "tokens_per_second": 2,
}
QWEN3_TEXT = {
    **{k: v for k, v in TEXT.items() if k not in ("rope_theta", "rope_scaling")},
    "head_dim": 64,
    "rope_scaling": {
        "rope_type": "default",
        "mrope_section": [8, 12, 12],
        "mrope_interleaved": True,
    },
    "rope_theta": 5000000,
}
QWEN3_VISION = {
    "depth": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_heads": 2,
    "in_channels": 3,
    "hidden_act": "gelu_pytorch_tanh",
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 128,  # must equal the text hidden size
    "num_position_embeddings": 256,
    "deepstack_visual_indexes": [0],
}
QWEN3_PROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessorFast",
    "processor_class": "Qwen3VLProcessor",
    "size": {"shortest_edge": 65536, "longest_edge": 16777216},
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
QWEN3_VIDEO_PROCESSOR = {
    "video_processor_type": "Qwen3VLVideoProcessor",
    "processor_class": "Qwen3VLProcessor",
    "size": {"shortest_edge": 4096, "longest_edge": 25165824},
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
PROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "do_resize": True,
    "do_convert_rgb": True,
}


def build_tokenizer(folder: Path) -> dict[str, int]:
    return train_tokenizer(folder, SPECIAL_TOKENS, TRAINING_TEXT)


def build(folder: Path, arch: str = "qwen2.5-vl") -> Path:
    """Write the folder; ``arch`` is "qwen2.5-vl" or "qwen3-vl"."""
    if arch not in ("qwen2.5-vl", "qwen3-vl"):
        raise ValueError(f"unknown architecture {arch!r}: qwen2.5-vl or qwen3-vl")
    qwen3 = arch == "qwen3-vl"
    folder.mkdir(parents=True, exist_ok=True)
    ids = build_tokenizer(folder)
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    vocab_size = max(len(vocab), max(ids.values()) + 1)
    eos = ids["<|im_end|>"]
    pad = ids["<|endoftext|>"]
    text = QWEN3_TEXT if qwen3 else TEXT
    model_type = "qwen3_vl" if qwen3 else "qwen2_5_vl"
    write_json(
        folder / "config.json",
        {
            "architectures": [
                "Qwen3VLForConditionalGeneration" if qwen3 else "Qwen2_5_VLForConditionalGeneration"
            ],
            "model_type": model_type,
            "torch_dtype": "float32",
            "tie_word_embeddings": False,
            **({} if qwen3 else {"bos_token_id": pad, "eos_token_id": eos, **text}),
            "text_config": {
                **text,
                "model_type": f"{model_type}_text",
                "vocab_size": vocab_size,
                "bos_token_id": pad,
                "eos_token_id": eos,
            },
            "vision_start_token_id": ids["<|vision_start|>"],
            "vision_end_token_id": ids["<|vision_end|>"],
            "image_token_id": ids["<|image_pad|>"],
            "video_token_id": ids["<|video_pad|>"],
            "vision_config": {**(QWEN3_VISION if qwen3 else VISION), "model_type": model_type},
        },
    )
    template = CHAT_TEMPLATE.replace("%(system)s", "" if qwen3 else DEFAULT_SYSTEM)
    write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "model_max_length": 32768,
            "chat_template": template,
        },
    )
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    write_json(folder / "preprocessor_config.json", QWEN3_PROCESSOR if qwen3 else PROCESSOR)
    if qwen3:
        write_json(folder / "video_preprocessor_config.json", QWEN3_VIDEO_PROCESSOR)
    write_json(
        folder / "generation_config.json",
        {"bos_token_id": pad, "eos_token_id": [eos, pad], "pad_token_id": pad},
    )
    return folder


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), *sys.argv[2:3]))
