"""Predicted loss increase of each per-layer option (bits b, sparsity s, pattern, channels).

Second-order model around trained weights (gradient ≈ 0), with the layer's Hessian block
replaced by its mean eigenvalue Tr(H_i)/n_i (HAWQ-V2, Dong et al. 2020; HAWQ-V3, Yao et al.
2021), extended to pruning masks M_s and removed channels:

    Ω_i(o) = ½ · (Tr(H_i) / n_i) · ‖C_o(W_i) − W_i‖²,

where C_o zeroes the channels the option removes (output rows of the layer's channel group and
input columns of the group feeding it, chosen as apply chooses them), masks the rest and quantizes
what is kept. Summed over the members of a channel group, Ω is the group's predicted loss change.
HAWQ's Ω omits the ½; with it, Ω predicts the loss change itself. The allocation is the same.

A trace estimate can be negative or noisy (stochastic estimators); a loss increase is never
rewarded: the trace used is ``safe_trace`` (the upper end of its 95% error bar where the estimate
has not converged, never below 0).
"""

from __future__ import annotations

import torch

from compress.errors import ConfigError
from compress.prune.masks import pruning_mask
from compress.quant.weights import fake_quantize_per_channel
from compress.vocab.channels import kept_width
from compress.vocab.options import LayerOption

Z95 = 1.96  # two-sided 95% normal quantile


def converged(trace: float, stderr: float) -> bool:
    """Whether the trace's 95% error bar lies above zero (its sign is known)."""
    return trace - Z95 * stderr > 0


def safe_trace(trace: float, stderr: float) -> float:
    """The trace the planner uses: the estimate where it has converged; the upper end of its 95%
    error bar (at least 0) where not, so noise can only make a layer look more sensitive."""
    return trace if converged(trace, stderr) else max(trace + Z95 * stderr, 0.0)


def top_rows(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Indices of the ``kept_width`` output rows of largest ℓ2 norm, in order (a lone layer's
    channel choice when no group is given)."""
    norms = weight.detach().reshape(weight.shape[0], -1).norm(dim=1)
    keep = kept_width(weight.shape[0], sparsity)
    return torch.sort(torch.argsort(norms, descending=True, stable=True)[:keep]).values


def compressed_weight(weight: torch.Tensor, option: LayerOption, kept_rows: torch.Tensor | None = None,
                      kept_columns: torch.Tensor | None = None) -> torch.Tensor:
    """C_o(W): the removed rows / columns zeroed (``kept_rows``: output channels the option keeps,
    by default the top-norm rows for a ``channel`` option; ``kept_columns``: input features the
    producer of the layer's input keeps), then on the rest: prune by the mask pattern, then
    quantize (zeros stay exactly zero). A rank option's weight needs the layer's input statistics:
    ``ranks.FactorisedOptions`` prices it."""
    if option.rank is not None:
        raise ConfigError(f"option {option.label()} factorises the layer; its weight comes from "
                          "compress.plan.ranks.FactorisedOptions (the layer's input statistics)")
    if kept_rows is None and option.channel_sparsity() > 0:
        kept_rows = top_rows(weight, option.channel_sparsity())
    narrow = weight if kept_rows is None else weight.index_select(0, kept_rows)
    narrow = narrow if kept_columns is None else narrow.index_select(1, kept_columns)
    if option.pattern != "channel" and (option.sparsity > 0 or option.pattern == "2:4"):
        narrow = narrow * pruning_mask(narrow, option.sparsity, option.pattern)
    narrow = fake_quantize_per_channel(narrow, option.bits)
    if kept_rows is None and kept_columns is None:
        return narrow
    result = torch.zeros_like(weight)
    rows = torch.arange(weight.shape[0]) if kept_rows is None else kept_rows
    columns = torch.arange(weight.shape[1]) if kept_columns is None else kept_columns
    result[rows[:, None], columns[None, :]] = narrow
    return result


def sensitivity(weight: torch.Tensor, trace: float, num_params: int, option: LayerOption,
                kept_rows: torch.Tensor | None = None, kept_columns: torch.Tensor | None = None) -> float:
    """Ω_i for one option, in units of the loss."""
    perturbation = compressed_weight(weight.detach(), option, kept_rows, kept_columns) - weight.detach()
    return 0.5 * trace / num_params * float(perturbation.double().pow(2).sum())
