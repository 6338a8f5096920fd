"""Pruning masks (1 = keep) for a weight whose axis 0 is the output channel.

- unstructured: keep the round((1 − s)·n) largest |w| (ties broken by position);
- 2:4: in every group of 4 consecutive weights along the reduction axis keep the 2 largest
  (the pattern TensorRT's sparse kernels need; the reduction size must be a multiple of 4);
- channel: keep the ``kept_width(C, s)`` output channels with the largest ℓ2 norm (the one rule,
  ``compress.vocab.channels``).
"""

from __future__ import annotations

import torch

from compress.vocab.channels import kept_width
from compress.vocab.options import PATTERNS  # noqa: F401 — the patterns these masks implement


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    keep = round((1 - sparsity) * weight.numel())
    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    mask[torch.argsort(weight.detach().abs().flatten(), descending=True, stable=True)[:keep]] = True
    return mask.reshape(weight.shape)


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    rows = weight.detach().reshape(weight.shape[0], -1)
    if rows.shape[1] % 4:
        raise ValueError(f"2:4 needs a reduction size divisible by 4, got {rows.shape[1]}")
    groups = rows.abs().reshape(rows.shape[0], -1, 4)
    top = torch.topk(groups, 2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return mask.reshape(weight.shape)


def channel_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    norms = weight.detach().reshape(weight.shape[0], -1).norm(dim=1)
    keep = kept_width(weight.shape[0], sparsity)
    kept = torch.zeros(weight.shape[0], dtype=torch.bool)
    kept[torch.argsort(norms, descending=True, stable=True)[:keep]] = True
    return kept.reshape((-1,) + (1,) * (weight.ndim - 1)).expand_as(weight)


def pruning_mask(weight: torch.Tensor, sparsity: float, pattern: str) -> torch.Tensor:
    """The mask for ``pattern``; 2:4 ignores ``sparsity`` (it is always 0.5)."""
    if pattern == "2:4":
        return two_four_mask(weight)
    if pattern == "channel":
        return channel_mask(weight, sparsity)
    return magnitude_mask(weight, sparsity)
