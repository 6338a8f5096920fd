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

import torch

from compress.data.text import IGNORE_INDEX
from compress.errors import InputError


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
