"""Deterministic data order, sharded over ranks.

Epoch e visits the examples in the permutation drawn from a generator seeded with (seed, e), in
global batches of ``batch_size`` (the last incomplete batch is dropped, so every step sees the
same batch size). The position in the data is therefore a function of the step alone, which
makes resuming exact. Under torchrun each rank takes its contiguous slice of every global batch
(``torch.tensor_split``), so the ranks together see exactly the single-process batch.
"""

from __future__ import annotations

import torch

from compress.data.source import Batch, DataSource

EPOCH_SEED_STRIDE = 1_000_003  # a prime larger than any epoch count: (seed, epoch) -> distinct seeds


def epoch_order(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch)
    return torch.randperm(num_examples, generator=generator)


def global_batch(order: torch.Tensor, position: int, batch_size: int) -> torch.Tensor:
    """Indices of the ``position``-th global batch of an epoch."""
    return order[position * batch_size : (position + 1) * batch_size]


def rank_slice(indices: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    return torch.tensor_split(indices, world)[rank]


def load_batch(data: DataSource, indices: torch.Tensor) -> Batch:
    """The examples at ``indices`` as one batch."""
    return next(data.subset(indices.tolist(), data.name).batches(len(indices)))
