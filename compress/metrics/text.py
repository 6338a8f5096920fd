"""Causal language model metrics, accumulated batch by batch as (sum, count) pairs.

- Perplexity (Jelinek et al. 1977): exp of the mean next-token negative log-likelihood,
  PPL = exp(−(1/N) Σ_t log p(y_t | x_<t)), over the N positions with a target (``IGNORE_INDEX``
  positions excluded).
- Mean per-token KL divergence to the reference (FP32) model:
  (1/N) Σ_t KL(p_ref,t ‖ p_t) = (1/N) Σ_t Σ_v p_ref,t,v (log p_ref,t,v − log p_t,v), over the N
  positions the attention mask keeps; 0 exactly when the two models predict the same
  distributions. It measures how far compression moved the model without needing labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from compress.data.source import DataSource
from compress.data.text import IGNORE_INDEX
from compress.errors import InputError


@dataclass(frozen=True)
class TextScores:
    """A causal LM on next-token data: perplexity over ``num_targets`` predicted tokens, and the
    mean per-token KL to the reference model over ``num_positions`` unpadded positions (None
    without a reference)."""

    perplexity: float
    num_targets: int
    mean_token_kl: float | None
    num_positions: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def has_token_targets(data: DataSource) -> bool:
    """Whether ``data`` holds next-token targets (one per position, ``[samples, tokens]``), as
    causal-LM text data does, rather than one class per sample."""
    if not data.has_targets:
        return False
    targets = getattr(data, "targets", None)
    if targets is None:
        targets = next(iter(data.batches(1))).targets
    return targets is not None and targets.ndim == 2


def causal_lm_scores(model: nn.Module, data: DataSource, reference: nn.Module | None = None,
                     batch_size: int = 32, advance: Callable[[int], object] | None = None) -> TextScores:
    """Perplexity of ``model`` on ``data`` (inputs ``(input_ids, attention_mask)``, next-token
    targets, as ``compress.data.text`` makes them) and, given ``reference``, its mean per-token
    KL to it; ``advance(n)`` is called after each batch of ``n`` samples (a progress bar)."""
    if not data.has_targets:
        raise InputError(f"data {data.name} has no next-token targets; give causal-lm text data")
    nll, num_targets, kl, num_positions = 0.0, 0, 0.0, 0
    with torch.inference_mode():
        for batch in data.batches(batch_size):
            logits = model(*batch.inputs)
            batch_nll, count = token_nll(logits, batch.targets)
            nll, num_targets = nll + batch_nll, num_targets + count
            if reference is not None:
                batch_kl, count = token_kl(logits, reference(*batch.inputs), batch.inputs[1])
                kl, num_positions = kl + batch_kl, num_positions + count
            if advance is not None:
                advance(len(batch))
    mean_kl = kl / num_positions if reference is not None and num_positions else None
    return TextScores(perplexity(nll, num_targets), num_targets, mean_kl, num_positions)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    """(Σ −log softmax(logits)_target, number of targets) over positions whose target is not
    ``IGNORE_INDEX``; ``logits`` ``[B, T, V]``, ``targets`` ``[B, T]``."""
    kept = targets != IGNORE_INDEX
    total = torch.nn.functional.cross_entropy(logits[kept].double(), targets[kept], reduction="sum")
    return float(total), int(kept.sum())


def token_kl(logits: torch.Tensor, reference_logits: torch.Tensor, attention_mask: torch.Tensor) -> tuple[float, int]:
    """(Σ_t KL(softmax(reference_logits_t) ‖ softmax(logits_t)), number of positions) over the
    positions where ``attention_mask`` is 1; logits ``[B, T, V]``, mask ``[B, T]``."""
    kept = attention_mask.bool()
    log_p = torch.log_softmax(logits[kept].double(), dim=-1)
    log_reference = torch.log_softmax(reference_logits[kept].double(), dim=-1)
    total = (log_reference.exp() * (log_reference - log_p)).sum()
    return float(total), int(kept.sum())


def perplexity(nll_sum: float, num_tokens: int) -> float:
    """exp(nll_sum / num_tokens): the perplexity of ``token_nll`` sums over a data set."""
    if num_tokens == 0:
        raise InputError("the data has no next-token targets; perplexity needs text of at least 2 tokens")
    return math.exp(nll_sum / num_tokens)
