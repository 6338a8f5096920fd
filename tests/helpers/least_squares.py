"""Random least-squares layer problems for the reconstruction tests: a weight, correlated inputs,
their H = 2·XᵀX/N, and the output error ‖ΔW·Xᵀ‖²/N."""

from __future__ import annotations

import torch

from compress.reconstruct.stats import LayerStats


def problem(rows: int = 6, columns: int = 20, samples: int = 300, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(columns, columns, generator=generator, dtype=torch.float64) / columns**0.5
    x = torch.randn(samples, columns, generator=generator, dtype=torch.float64) @ (torch.eye(columns) + mixing)
    weight = torch.randn(rows, columns, generator=generator, dtype=torch.float64)
    return weight, x


def stats_of(x: torch.Tensor) -> LayerStats:
    return LayerStats(hessian=(2 * x.T @ x / len(x))[None], mean=x.mean(0)[None], count=len(x))


def output_error(delta: torch.Tensor, x: torch.Tensor) -> float:
    return float((delta @ x.T).pow(2).sum() / len(x))
