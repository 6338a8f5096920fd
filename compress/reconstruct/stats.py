"""Layer input statistics: H = 2·X·Xᵀ / N for every Conv2d and Linear, from forward hooks.

For a layer y = W·x with input samples x_1 … x_N (rows of X ∈ R^{N×d}), the output error of a weight
change ΔW is ‖ΔW·Xᵀ‖²_F / N = ½ tr(ΔW·H·ΔWᵀ) with H = 2·XᵀX / N — the Hessian of the mean squared
output error, the matrix GPTQ/OBQ/SparseGPT sweep (Frantar et al. 2022, arXiv 2210.17323, eq. 1) and,
up to the factor 2, K-FAC's input factor A = E[x xᵀ] (Martens & Grosse 2015).

What a sample is:
- Linear: every row of the input flattened to [-1, in_features] (N-D inputs: every token counts),
  except padding: when the batch is a text batch ``(input_ids, attention_mask)`` (``token_mask``) and
  the layer's input is [B, T, d] over the same tokens, only the rows of real tokens (mask 1) count —
  padded positions are ignored by the model's output (attention and pooling mask them), so their
  error does not matter and their activations would only distort H. The driver
  (``collect_layer_stats``, the sequential reconstruction) sets each accumulator's ``token_mask``
  for every batch.
- Conv2d: every output position of every image; its sample is the receptive-field patch, unfolded
  exactly as ``F.conv2d`` contracts it (channel-major, then kernel row, then kernel column: the order
  of ``weight.reshape(out, -1)``). Grouped and depthwise convs have one H per group, of size
  (in_channels/groups)·kh·kw, built from that group's input channels.

Sums are accumulated batch by batch in float64 (no activation is kept): the products of each chunk of
at most ``CHUNK_ROWS`` samples are formed in the input's precision (float32 products over 16k rows
carry a relative error of about 1e-6, at a third of float64's time) and added in float64; under ``torch.distributed``
the sums and counts of all ranks are added before H is formed, so a sharded run equals one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from compress.curvature.distributed import all_reduce_sum
from compress.errors import InputError
from compress.vocab.layers import is_compressible

CHUNK_ROWS = 16384  # samples per product (bounds the float32 rounding of one partial sum)


@dataclass(frozen=True)
class LayerStats:
    """One layer's input statistics.

    ``hessian``: [groups, d, d] float64, H_g = 2·Σ x xᵀ / N over the samples of group g (groups = 1
    for Linear and ordinary convs). ``mean``: [groups, d], Σ x / N. ``count``: N, the number of
    samples (tokens, or patches = images × output positions), the same for every group.
    With input-drift statistics (``drift.DriftAccumulator``; else None): ``cross`` [groups, d, d],
    C = 2·Σ x̃ xᵀ / N between the layer's input x̃ (from the compressed model, the samples of
    ``hessian``) and the float model's input x on the same sample, and ``reference_hessian``
    2·Σ x xᵀ / N of the float inputs.
    """

    hessian: torch.Tensor
    mean: torch.Tensor
    count: int
    cross: torch.Tensor | None = None
    reference_hessian: torch.Tensor | None = None

    @property
    def groups(self) -> int:
        return int(self.hessian.shape[0])

    @property
    def dim(self) -> int:
        return int(self.hessian.shape[-1])

    @property
    def nbytes(self) -> int:
        held = (self.hessian, self.mean, self.cross, self.reference_hessian)
        return sum(t.numel() * t.element_size() for t in held if t is not None)


def supports(module: nn.Module) -> bool:
    """Whether statistics can be collected for ``module``: every compressible layer (Linear, Conv2d)."""
    return is_compressible(module)


def token_mask(batch: object) -> torch.Tensor | None:
    """The real tokens of a text batch as bool [B, T]: the batch is ``(input_ids, attention_mask)``,
    two integer tensors of one [B, T] shape, the second all 0/1 (the toolkit's text data; HF models
    called positionally). None for any other batch."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        return None
    ids, mask = batch
    if not (isinstance(ids, torch.Tensor) and isinstance(mask, torch.Tensor)):
        return None
    if ids.ndim != 2 or ids.shape != mask.shape or ids.is_floating_point() or mask.is_floating_point():
        return None
    if not ((mask == 0) | (mask == 1)).all():
        return None
    return mask.bool()


def layer_samples(module: nn.Module, inputs: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
    """The layer's input samples as [groups, N, d]: rows of a Linear input (only those where
    ``tokens`` [B, T] is true, when the input is [B, T, d]), or conv patches unfolded in
    ``F.conv2d``'s order so that ``y = samples @ weight.reshape(out, -1)ᵀ`` per group."""
    if isinstance(module, nn.Linear):
        if tokens is not None and inputs.shape[:-1] == tokens.shape:
            inputs = inputs[tokens]
        return inputs.reshape(1, -1, module.in_features)
    if isinstance(module, nn.Conv2d):
        return _conv_patches(module, inputs)
    raise InputError(f"layer statistics need a Linear or Conv2d layer, got {type(module).__name__}")


def _conv_patches(conv: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    padded = _pad(conv, inputs if inputs.ndim == 4 else inputs.unsqueeze(0))
    patches = F.unfold(padded, conv.kernel_size, dilation=conv.dilation, stride=conv.stride)  # [B, C·kh·kw, L]
    per_group = patches.shape[1] // conv.groups
    samples = patches.transpose(1, 2).reshape(-1, conv.groups, per_group)  # [B·L, groups, d]
    return samples.transpose(0, 1)


def _pad(conv: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    """The input padded explicitly as the conv pads it (zeros or its padding mode; 'same' puts the
    extra element on the right/bottom, as PyTorch does)."""
    if conv.padding == "valid":
        return inputs
    if conv.padding == "same":
        pads: list[int] = []
        for dilation, kernel in zip(reversed(conv.dilation), reversed(conv.kernel_size)):
            total = dilation * (kernel - 1)
            pads += [total // 2, total - total // 2]
    else:
        pads = [p for p in reversed(conv.padding) for _ in range(2)]
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    return F.pad(inputs, pads, mode=mode) if any(pads) else inputs


class StatsAccumulator:
    """Running Σ x xᵀ, Σ x and N of one layer's input; ``add`` is called with each input batch
    (typically from a forward pre-hook), ``result`` all-reduces and returns ``LayerStats``.
    ``token_mask``: the real tokens of the batch being run (``token_mask(batch)``), set by the driver."""

    def __init__(self, module: nn.Module) -> None:
        if not supports(module):
            raise InputError(f"layer statistics need a Linear or Conv2d layer, got {type(module).__name__}")
        self.module = module
        groups = module.groups if isinstance(module, nn.Conv2d) else 1
        dim = module.weight[0].numel() if isinstance(module, nn.Conv2d) else module.in_features
        self.products = torch.zeros(groups, dim, dim, dtype=torch.float64)
        self.sums = torch.zeros(groups, dim, dtype=torch.float64)
        self.count = 0
        self.token_mask: torch.Tensor | None = None

    def add(self, inputs: torch.Tensor) -> None:
        self.add_samples(layer_samples(self.module, inputs.detach(), self.token_mask))

    def add_samples(self, samples: torch.Tensor) -> None:
        """Accumulate samples [groups, n, d] (``layer_samples``)."""
        for start in range(0, samples.shape[1], CHUNK_ROWS):
            chunk = samples[:, start : start + CHUNK_ROWS]
            self.products += torch.bmm(chunk.transpose(1, 2), chunk).to(torch.float64)
            self.sums += chunk.to(torch.float64).sum(dim=1)
        self.count += samples.shape[1]

    @property
    def nbytes(self) -> int:
        return self.products.numel() * self.products.element_size() + self.sums.numel() * self.sums.element_size()

    def result(self) -> LayerStats:
        """H = 2·Σ x xᵀ / N and the mean, with sums and N added over ``torch.distributed`` ranks."""
        products, sums = all_reduce_sum(self.products.clone()), all_reduce_sum(self.sums.clone())
        count = int(all_reduce_sum(torch.tensor([self.count], dtype=torch.float64)).item())
        if count == 0:
            raise InputError("layer statistics need at least one calibration sample (got none)")
        return LayerStats(hessian=2 * products / count, mean=sums / count, count=count)


def run_forward(model: nn.Module, batch: object) -> object:
    """``model(*batch)`` for a tuple/list of inputs, ``model(batch)`` otherwise."""
    return model(*batch) if isinstance(batch, (tuple, list)) else model(batch)


def collect_layer_stats(
    model: nn.Module,
    batches: Iterable[object],
    names: Sequence[str],
    forward: Callable[[nn.Module, object], object] = run_forward,
) -> dict[str, LayerStats]:
    """Statistics of the inputs of the layers ``names`` over ``batches`` (each passed to ``forward``,
    by default ``model(*batch)``), in one pass without gradients, hooks removed afterwards."""
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise InputError(f"no layer named {missing[0]!r} in the model")
    accumulators = {name: StatsAccumulator(modules[name]) for name in names}
    handles = [modules[name].register_forward_pre_hook(_hook(acc)) for name, acc in accumulators.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                set_batch(accumulators.values(), batch)
                forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: acc.result() for name, acc in accumulators.items()}


def set_batch(accumulators: Iterable[StatsAccumulator], batch: object) -> None:
    """Tell ``accumulators`` which batch runs next (its real tokens; see ``token_mask``)."""
    tokens = token_mask(batch)
    for accumulator in accumulators:
        accumulator.token_mask = tokens


def _hook(accumulator: StatsAccumulator) -> Callable:
    def hook(module: nn.Module, args: tuple) -> None:
        accumulator.add(args[0])

    return hook


def stats_nbytes(stats: dict[str, LayerStats]) -> int:
    """Bytes held by a set of layer statistics."""
    return sum(s.nbytes for s in stats.values())
