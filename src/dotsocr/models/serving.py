"""What the launch planner needs to know about a model: its shape (for memory) and its flags."""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 1024**3


@dataclass(frozen=True)
class VisionTower:
    """The vision encoder's shape: its activations, not the KV cache, fill small cards first."""

    embed_dim: int
    intermediate: int
    heads: int
    patch: int  # pixels per patch side
    merge: int  # patches merged per side into one language-model token

    def patches(self, pixels: int) -> int:
        return pixels // (self.patch * self.patch)

    def activation_bytes(self, pixels: int, *, flash_attention: bool, dtype_bytes: int = 2) -> int:
        """Peak activations of one encoder layer for one image (layers run one after another).

        Per patch: the residual stream, q, k, v, the attention output and the MLP's gate,
        up and activated tensors. Without flash attention the score matrix (patches
        squared, per head) is materialised too: that term is what asks for tens of GiB
        at full resolution.
        """
        patches = self.patches(pixels)
        linear = patches * (6 * self.embed_dim + 3 * self.intermediate) * dtype_bytes
        if flash_attention:
            return linear
        return linear + patches * patches * self.heads * dtype_bytes


@dataclass(frozen=True)
class Decoder:
    """The language model's shape: KV cache per token and prefill activations."""

    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int
    linear_params: int  # weights in its linear layers (what fp8 quantization halves)

    @classmethod
    def dense(
        cls,
        *,
        layers: int,
        hidden: int,
        intermediate: int,
        kv_heads: int,
        head_dim: int,
        vocab: int,
        heads: int | None = None,
    ) -> Decoder:
        """A dense decoder, its linear weights counted from its shape: per layer q and o
        (hidden x heads*head_dim; heads*head_dim is hidden unless ``heads`` says otherwise),
        k and v (hidden x kv_heads*head_dim), and the gated MLP's three hidden x
        intermediate matrices."""
        q_dim = heads * head_dim if heads else hidden
        per_layer = 2 * hidden * q_dim + 2 * hidden * kv_heads * head_dim
        per_layer += 3 * hidden * intermediate
        return cls(layers, hidden, intermediate, kv_heads, head_dim, vocab, layers * per_layer)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def activation_bytes(self, batched_tokens: int, sequences: int, dtype_bytes: int = 2) -> int:
        """A prefill step's peak: per token the residual stream and the MLP, plus fp32 logits
        for the last token of each sequence."""
        per_token = (4 * self.hidden + 3 * self.intermediate) * dtype_bytes
        return batched_tokens * per_token + sequences * self.vocab * 4


@dataclass(frozen=True)
class Serving:
    """A model's facts for ``vllm serve``: its size, shape and the flags it always needs."""

    hub_id: str
    weight_bytes: int  # in bf16
    vision: VisionTower
    decoder: Decoder
    max_image_tokens: int  # the processor's pixel budget, in tokens
    served_model_name: str = "model"
    flags: dict[str, str | None] = field(default_factory=dict)  # flag -> value (None: a switch)
    flag_reasons: dict[str, str] = field(default_factory=dict)
    pixels_per_token: int = 784  # 28 x 28 for patch 14 and merge 2
    # The processor keyword that caps an image's pixels (--mm-processor-kwargs); None for
    # models that take a fixed size, whose image tokens do not depend on the page.
    pixel_cap_kwarg: str | None = "max_pixels"
    max_context: int | None = None  # the model's own longest sequence, when it is short

    def fp8_weight_bytes(self) -> int:
        """fp8 halves the decoder's linear layers; the rest (embeddings, norms, and the vision
        encoder, which we do not count on being quantized) stays 16-bit."""
        return self.quantized_weight_bytes(8)

    def quantized_weight_bytes(self, bits: int) -> int:
        """The weights with the decoder's linear layers at ``bits`` per weight (AWQ and GPTQ
        checkpoints: 4, plus a 16-bit scale and zero point per group of 128)."""
        per_weight = bits / 8 + (4 / 128 if bits < 8 else 0)
        return (
            self.weight_bytes
            - 2 * self.decoder.linear_params
            + int(self.decoder.linear_params * per_weight)
        )


DOTS_OCR = Serving(
    hub_id="rednote-hilab/dots.ocr",
    weight_bytes=int(5.7 * GIB),  # about 3.0B parameters in bf16
    vision=VisionTower(embed_dim=1536, intermediate=4224, heads=12, patch=14, merge=2),
    decoder=Decoder.dense(
        layers=28,
        hidden=1536,
        intermediate=8960,
        kv_heads=2,
        head_dim=128,
        vocab=151_936,
    ),
    max_image_tokens=14_400,
    flags={
        "--trust-remote-code": None,
        "--chat-template-content-format": "string",
    },
    flag_reasons={
        "--trust-remote-code": "the checkpoint's config class (model_type dots_ocr) ships "
        "with the model, not with transformers",
        "--chat-template-content-format": "with list content the model's template drops its "
        "<|user|> markers and the model hallucinates",
    },
)
