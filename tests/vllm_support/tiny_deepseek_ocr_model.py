"""Write a tiny model folder of the DeepSeek-OCR architecture, with no weights.

vLLM serves it with ``--load-format dummy`` (random weights), so that the real server's
DeepSeek-OCR request path (its Gundam-mode processor, its chat template, its n-gram
logits processor and its token accounting) runs without a download. Run with the vLLM
venv's Python (it needs ``tokenizers``)::

    .venv-vllm/bin/python tests/vllm_support/tiny_deepseek_ocr_model.py OUT_DIR

What the folder holds, and why (facts from vLLM 0.32's own source:
model_executor/models/deepseek_ocr.py, deepencoder.py, deepseek_v2.py,
transformers_utils/configs/deepseek_vl2.py and transformers_utils/processors/deepseek_ocr.py):

- ``config.json``: ``DeepseekOCRForCausalLM``, ``model_type`` ``deepseek_vl_v2`` (vLLM's
  own config class, which renames it ``deepseek_ocr`` and so picks its DeepSeek-OCR chat
  template), ``tile_tag`` ``2D`` (the only one vLLM supports), the language model under
  ``language_config`` and the projector under ``projector_config``.
- Only the language model and the projector shrink. vLLM builds the vision towers at
  fixed sizes whatever the config says (``build_sam_vit_b()``: SAM ViT-B, 768 wide, 12
  layers; a CLIP-L of 1024 wide and 24 layers), so they keep their real size: about 400 M
  random parameters, and the CPU reads every page through them. Their features, 1024 +
  1024 wide, are what the ``linear`` projector takes (``input_dim`` 2048); its
  ``n_embed`` must equal the language model's hidden size.
- The language model: DeepSeek-V2 with plain multi-head attention, as the real one has
  (``qk_nope_head_dim`` and ``qk_rope_head_dim`` 0 select vLLM's ``DeepseekAttention``;
  ``kv_lora_rank`` null keeps MLA off): 2 layers of 128 wide, 2 heads of 64; layer 0
  dense, layer 1 a mixture of 4 routed experts (2 a token) and 1 shared one, the real
  layout in small. The vocabulary is the real size, 129,280.
- The tokenizer: a byte-level BPE trained here on the prompts, with DeepSeek's
  begin/end-of-sentence tokens (the end one is what the profile strips from answers) at
  ids 0 and 1 and the processor's default pad token (it would add it if missing) at 2,
  filler entries no merge produces up to id 128,820, then ``<td>`` and ``</td>`` at
  128,821 and 128,822, the ids the profile's ``whitelist_token_ids`` name, then
  ``<image>`` (the processor's placeholder, looked up by name) and the grounding markers
  as special tokens. ``tokenizer_class`` is ``LlamaTokenizerFast``, a class vLLM's
  processor declares. No chat template: vLLM's own for ``deepseek_ocr`` (BOS + the
  content) applies, the template the profile counts on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tiny_common import write_json

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
TD_IDS = {"<td>": 128821, "</td>": 128822}  # the profile's whitelist_token_ids
MARKERS = ["<image>", "<|grounding|>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>"]
VOCAB_SIZE = 129280
TRAINING_TEXT = [
    "Convert the document to markdown. Free OCR. Parse the figure.",
    "# Annual Report 2024\n\nRevenue grew by 12% while costs fell. 0123456789",
    "<table><tr><td>Year</td><td>Revenue</td></tr></table>",
    "[[100, 50, 900, 80]] title text table image caption equation",
]
LANGUAGE = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "model_type": "deepseek_v2",
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 128,
    "intermediate_size": 256,  # layer 0's dense MLP
    "moe_intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,  # head dim 64
    "num_key_value_heads": 2,
    "first_k_dense_replace": 1,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "n_shared_experts": 1,
    "n_group": 1,
    "topk_group": 1,
    "topk_method": "greedy",
    "kv_lora_rank": None,
    "q_lora_rank": None,
    "qk_nope_head_dim": 0,
    "qk_rope_head_dim": 0,
    "v_head_dim": 0,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "bos_token_id": 0,
    "eos_token_id": 1,
    "torch_dtype": "float32",
}
PROJECTOR = {"projector_type": "linear", "input_dim": 2048, "n_embed": LANGUAGE["hidden_size"]}
# Not read by vLLM (its towers are fixed); what the real checkpoint describes.
VISION = {"image_size": 1024, "patch_size": 16, "width": 1024, "layers": 24, "heads": 16}


def build_tokenizer(folder: Path) -> dict[str, int]:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer)
    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    # Entries no merge produces, so that the added tokens land on the real ids.
    for index in range(len(vocab), min(TD_IDS.values())):
        vocab[f"<filler_{index}>"] = index
    tokenizer = Tokenizer.from_str(json.dumps(data))
    added = [*TD_IDS, *MARKERS]
    tokenizer.add_special_tokens([AddedToken(token, normalized=False) for token in added])
    tokenizer.save(str(folder / "tokenizer.json"))
    ids = {token: tokenizer.token_to_id(token) for token in [BOS, EOS, PAD, *added]}
    wrong = {token: ids[token] for token, want in TD_IDS.items() if ids[token] != want}
    if wrong or ids[BOS] != 0 or ids[EOS] != 1 or max(ids.values()) >= VOCAB_SIZE:
        raise RuntimeError(f"unexpected token ids: {ids}")
    return ids


def build(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(folder)
    write_json(
        folder / "config.json",
        {
            "architectures": ["DeepseekOCRForCausalLM"],
            "model_type": "deepseek_vl_v2",
            "torch_dtype": "float32",
            "tile_tag": "2D",
            "global_view_pos": "head",
            "candidate_resolutions": [[1024, 1024]],
            "language_config": LANGUAGE,
            "projector_config": PROJECTOR,
            "vision_config": VISION,
        },
    )
    write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "LlamaTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": PAD,
            "add_bos_token": True,
            "add_eos_token": False,
            "model_max_length": 8192,
        },
    )
    write_json(folder / "generation_config.json", {"bos_token_id": 0, "eos_token_id": 1})
    return folder


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
