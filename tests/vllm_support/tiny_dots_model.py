"""Write a tiny model folder of the dots.ocr architecture, with no weights.

vLLM serves it with ``--load-format dummy`` (random weights), so the real server, its
request path, image processing, token accounting and errors run without a download.
Run with the vLLM venv's Python (it needs ``tokenizers``)::

    .venv-vllm/bin/python tests/vllm_support/tiny_dots_model.py OUT_DIR

Facts from ../shared/reference/vllm_cpu_recipe.md.
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
    "<|imgpad|>",
    "<|img|>",
    "<|endofimg|>",
    "<|system|>",
    "<|endofsystem|>",
    "<|user|>",
    "<|endofuser|>",
    "<|assistant|>",
    "<|endofassistant|>",
]
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}<|system|>{{ message['content'] }}<|endofsystem|>"
    "{%- elif message['role'] == 'user' -%}<|user|>{{ message['content'] }}<|endofuser|>"
    "{%- else -%}<|assistant|>{{ message['content'] }}<|endofassistant|>{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
TRAINING_TEXT = [
    "Please output the layout information from the PDF image, including each layout "
    "element's bbox, its category, and the corresponding text content within the bbox.",
    "Bbox format: [x1, y1, x2, y2]. Layout Categories: Caption, Footnote, Formula, "
    "List-item, Page-footer, Page-header, Picture, Section-header, Table, Text, Title.",
    "Extract the text content from this image. Extract text from the given bounding box.",
    '[{"bbox": [1, 2, 3, 4], "category": "Text", "text": "Hello world 0123456789"}]',
]
VISION = {
    "embed_dim": 64,
    "hidden_size": 128,  # must equal the text model's hidden size
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_channels": 3,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 1,
    "rms_norm_eps": 1e-5,
    "use_bias": False,
    "post_norm": True,
    "is_causal": False,
}
# vLLM wants a config class named DotsOCRConfig: a Qwen2 config plus image token ids and
# a vision config. Written out as the checkpoint's own remote code would be.
CONFIGURATION_PY = """
from transformers import Qwen2Config

try:
    from transformers.configuration_utils import PreTrainedConfig
except ImportError:  # transformers < 5
    from transformers.configuration_utils import PretrainedConfig as PreTrainedConfig

VISION_DEFAULTS = %(vision)r


class DotsVisionConfig(PreTrainedConfig):
    model_type = "dots_vit"

    def __init__(self, **kwargs):
        values = {**VISION_DEFAULTS, **kwargs}
        fields = {k: values.pop(k) for k in list(values) if k in VISION_DEFAULTS}
        super().__init__(**values)
        for name, value in fields.items():
            setattr(self, name, value)


class DotsOCRConfig(Qwen2Config):
    model_type = "dots_ocr"

    def __init__(self, image_token_id=None, video_token_id=None, vision_config=None, **kwargs):
        super().__init__(**kwargs)
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.vision_config = DotsVisionConfig(**(vision_config or {}))
"""


def build_tokenizer(folder: Path) -> dict[str, int]:
    return train_tokenizer(folder, SPECIAL_TOKENS, TRAINING_TEXT)


def build(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ids = build_tokenizer(folder)
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    vocab_size = max(len(vocab), max(ids.values()) + 1)
    eos = ids["<|endoftext|>"]
    write_json(
        folder / "config.json",
        {
            "architectures": ["DotsOCRForCausalLM"],
            "model_type": "dots_ocr",
            "auto_map": {"AutoConfig": "configuration_dots.DotsOCRConfig"},
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "vocab_size": vocab_size,
            "attention_bias": True,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "bos_token_id": eos,
            "eos_token_id": eos,
            "image_token_id": ids["<|imgpad|>"],
            "video_token_id": ids["<|video_pad|>"],
            "vision_config": VISION,
        },
    )
    (folder / "configuration_dots.py").write_text(
        CONFIGURATION_PY % {"vision": VISION}, encoding="utf-8"
    )
    write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "model_max_length": 32768,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    write_json(
        folder / "preprocessor_config.json",
        {
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2VLProcessor",
            "min_pixels": 3136,
            "max_pixels": 11289600,
            "patch_size": 14,
            "temporal_patch_size": 1,
            "merge_size": 2,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "do_resize": True,
        },
    )
    write_json(
        folder / "generation_config.json",
        {"bos_token_id": eos, "eos_token_id": [eos], "pad_token_id": eos},
    )
    return folder


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
