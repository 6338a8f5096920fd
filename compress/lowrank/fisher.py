"""The output-side Fisher diagonal of layers: d_i = E[g_i²], g = ∂ℓ/∂y the gradient of a loss with
respect to the layer's output y, averaged over the layer's output rows (tokens of a Linear, output
positions of a Conv2d) — the diagonal of K-FAC's output factor G (Martens & Grosse 2015), the row
weight of FWSVD (Hsu et al. 2022, arXiv 2207.00112).

Without targets the loss is self-distillation, ½·‖f(x) − f_ref(x)‖², whose gradient vanishes at the
uncompressed model; its curvature does not: the Gauss-Newton matrix Jᵀ·J. We draw one Gaussian
probe v ~ N(0, I) per model output and backpropagate it, g = Jᵀ·v, so E_v[g·gᵀ] = Jᵀ·J exactly
(the Monte-Carlo Fisher of a Gaussian output model). For unit-norm embeddings ½·‖e − e_ref‖² =
1 − cos(e, e_ref), so this is also the curvature of the cosine loss.

A layer no gradient reaches (its output never reaches the loss: d all zero) has no preferred output
rows; ``uniform_if_unseen`` gives it uniform row weights, the limit of a uniform d → 0 (the weighted
factorisation is then the unweighted one).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from compress.errors import InputError
from compress.reconstruct.stats import run_forward


def output_fisher_diag(
    model: nn.Module,
    batches: Iterable[object],
    names: Sequence[str],
    forward: Callable[[nn.Module, object], object] = run_forward,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Per layer in ``names``: d (float64, one entry per output feature/channel), d_i = mean over
    output rows of (Jᵀ·v)_i² with one Gaussian probe v per model output, over ``batches``."""
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise InputError(f"no layer named {missing[0]!r} in the model")
    generator = torch.Generator().manual_seed(seed)
    sums = {name: torch.zeros(_out_features(modules[name]), dtype=torch.float64) for name in names}
    counts = dict.fromkeys(names, 0)
    for batch in batches:
        captured: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        handles = [modules[name].register_forward_hook(_capture(captured[name])) for name in names]
        try:
            with torch.enable_grad():
                output = forward(model, batch)
        finally:
            for handle in handles:
                handle.remove()
        _accumulate(output, captured, sums, counts, generator)
    return {name: sums[name] / max(counts[name], 1) for name in names}


def uniform_if_unseen(fisher: torch.Tensor) -> torch.Tensor:
    """d itself (float64), or all ones where d is all zero (module docstring)."""
    fisher = fisher.to(torch.float64)
    return fisher if bool(fisher.sum() > 0) else torch.ones_like(fisher)


def _out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _capture(store: list[torch.Tensor]) -> Callable:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        store.append(output)

    return hook


def _accumulate(output: torch.Tensor, captured: dict[str, list[torch.Tensor]], sums: dict[str, torch.Tensor],
                counts: dict[str, int], generator: torch.Generator) -> None:
    """Add Σ_rows (Jᵀ·v)² for one batch, v a fresh Gaussian probe of the model output."""
    names = [name for name, outs in captured.items() if outs]
    layer_outputs = [out for name in names for out in captured[name]]
    if not layer_outputs or not all(out.requires_grad for out in layer_outputs):
        raise InputError("the output Fisher needs layer outputs that depend on trainable parameters "
                         "(set requires_grad on the model's parameters)")
    probe = torch.randn(output.shape, generator=generator, dtype=output.dtype)
    grads = iter(torch.autograd.grad(output, layer_outputs, grad_outputs=probe, allow_unused=True))
    for name in names:
        for out in captured[name]:
            grad = next(grads)
            if grad is None:
                continue
            rows = grad.movedim(1, -1).reshape(-1, grad.shape[1]) if out.ndim == 4 else grad.reshape(-1, grad.shape[-1])
            sums[name] += rows.to(torch.float64).pow(2).sum(dim=0)
            counts[name] += rows.shape[0]
