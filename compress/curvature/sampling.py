"""The data part of a curvature figure's error, when the figure is taken over a random subset.

A trace over the whole given data is T = (1/N) Σ_n t_n (t_n: one sample's layer trace). Over a
uniform random subset S of n samples, read in batches b of n_b samples, the estimate is
T_S = Σ_b (n_b/n) t_b with t_b the batch mean. Sampling without replacement gives
(Cochran 1977, §2.5 and §9.2, batches as clusters of equal expected size)

    Var(T_S) ≈ (1 − n/N) σ² / n,   σ² ≈ Σ_b n_b (t_b − T_S)² / (B − 1),

so the data part of the standard error comes from the spread of the per-batch figures (scaled
for Student's t with B − 1 degrees of freedom, ``compress.curvature.intervals``); with n = N it
is zero. Per-batch figures also carry probe noise, which only makes σ² larger.
"""

from __future__ import annotations

import torch

from compress.curvature.intervals import student_scale

MIN_BATCHES = 16  # batches a subset is read in, so that the spread between them is measurable


def data_stderr(batch_parts: torch.Tensor, batch_sizes: torch.Tensor, population: int) -> torch.Tensor:
    """Standard error from sampling the data, per column of ``batch_parts`` (B x L: batch b's
    weighted share (n_b/n)·t_b of each figure), for a subset of n = Σ n_b of ``population``."""
    samples = float(batch_sizes.sum())
    if samples >= population or len(batch_sizes) < 2:
        return torch.zeros(batch_parts.shape[1], dtype=torch.float64)
    weights = (batch_sizes / samples).unsqueeze(1)
    total = batch_parts.sum(dim=0)
    batch_means = batch_parts / weights
    spread = (batch_sizes.unsqueeze(1) * (batch_means - total) ** 2).sum(dim=0) / (len(batch_sizes) - 1)
    return ((1 - samples / population) * spread / samples).sqrt() * student_scale(len(batch_sizes))


def sample_indices(population: int, max_samples: int | None, seed: int) -> list[int] | None:
    """A uniform random subset of ``max_samples`` indices, in random order (so consecutive batches
    are random clusters); None when all data is used."""
    if max_samples is None or max_samples >= population:
        return None
    order = torch.randperm(population, generator=torch.Generator().manual_seed(seed))
    return order[:max_samples].tolist()


def subset_batch_size(num_samples: int, batch_size: int) -> int:
    """The batch size that reads a subset in at least ``MIN_BATCHES`` batches (at most ``batch_size``)."""
    return max(1, min(batch_size, num_samples // MIN_BATCHES))
