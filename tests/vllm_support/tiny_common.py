"""What the tiny-checkpoint builders share. They run as scripts with vLLM's Python
(tests/vllm_support/server.py build_tiny), so they import this as a sibling module."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def train_tokenizer(
    folder: Path, special_tokens: list[str], text: Iterable[str], unk: str | None = None
) -> dict[str, int]:
    """A small byte-level BPE tokenizer trained offline on ``text``, saved as
    tokenizer.json; returns the ids of ``special_tokens``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=unk) if unk else models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(text, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    return {token: tokenizer.token_to_id(token) for token in special_tokens}


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
