"""Kronecker factors of each Linear / Conv2d layer's Gauss-Newton block: K-FAC and KFLR.

For the mean loss over N samples the Gauss-Newton block of a layer y = W·a (W: out × in, a bias
as an appended input 1) is, with row-major vec(W),

    G_W = (1/N) Σ_n Σ_{t,t'} (g_nt g_nt'ᵀ) ⊗ (a_nt a_nt'ᵀ),   g_nt = J_ntᵀ S_n e,  S_n S_nᵀ = ∇²_f ℓ_n,

t running over a sample's positions (tokens, conv output pixels; one for a plain Linear input)
and J_nt the Jacobian of the model output with respect to the layer output at t. K-FAC (Martens
& Grosse 2015) keeps only t = t' and replaces the mean of products by the product of means
("expand", Eschenhagen et al. 2023):

    G_W ≈ G ⊗ A,   A = (1/R) Σ_{n,t} a_nt a_ntᵀ  (R rows),   G = (1/N) Σ_n Σ_t Σ_c g_ntc g_ntcᵀ.

G's output-Hessian factor comes either exactly — every column c of S_n (``compress.curvature.
losses.output_factor``), one backward pass per output dimension: KFLR (Botev, Ritter & Barber
2017) — or sampled: gradients of labels drawn from the model's own predictive distribution
(softmax for cross-entropy, a unit Gaussian for self-distillation), ``MC_SAMPLES`` backward
passes per batch: K-FAC's Monte-Carlo Fisher, whose spread between draws is its probe error. A is the layer-input statistic the second-order
reconstruction uses (``compress.reconstruct.stats``, H = 2A), with the bias row appended.

Tr(G ⊗ A) = Tr(G)·Tr(A) and the eigenvalues of G ⊗ A are the products λ_i(G)·λ_j(A). The
approximation is exact where the per-position factors do not vary with the sample and the
layer has one position (e.g. the last Linear layer under self-distillation, whose G is I),
or for one sample at one position; elsewhere ``benchmarks/curvature_approximations.py`` measures it.
Grouped convolutions give one Kronecker pair per group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from compress.curvature.distributed import all_reduce_sum
from compress.curvature.losses import output_factor
from compress.data.source import Batch
from compress.errors import InputError
from compress.reconstruct.stats import StatsAccumulator, set_batch
from compress.vocab.layers import compressible_layers

MC_SAMPLES = 2  # label draws per sample for K-FAC: two give the Monte-Carlo part of the error


@dataclass(frozen=True)
class KroneckerFactors:
    """One layer's factors, per group: ``input`` [groups, d_in(+1), d_in(+1)] = A (bias row last),
    ``output`` [groups, d_out/groups, d_out/groups] = G, both float64 and scaled for the mean loss."""

    input: torch.Tensor
    output: torch.Tensor

    @property
    def trace(self) -> float:
        """Tr(G ⊗ A) = Σ_groups Tr(G_g)·Tr(A_g)."""
        return float((_traces(self.output) * _traces(self.input)).sum())

    def top_eigenvalues(self, k: int) -> torch.Tensor:
        """The ``k`` largest eigenvalues of the block-diagonal Σ_g G_g ⊗ A_g, descending: the
        largest products of the factors' (non-negative) eigenvalues."""
        products = [torch.outer(_top(g, k), _top(a, k)).flatten()
                    for g, a in zip(self.output, self.input)]
        return torch.cat(products).sort(descending=True).values[:k]

    def dense(self) -> torch.Tensor:
        """The block-diagonal Σ_g G_g ⊗ A_g as a dense matrix (tests and tiny layers)."""
        return torch.block_diag(*(torch.kron(g, a) for g, a in zip(self.output, self.input)))


@dataclass(frozen=True)
class FactorPasses:
    """What one collection pass measured beyond the factors: the backward passes it ran, per
    layer the per-batch traces t_b = Σ_g Tr(A_b,g)·Tr(G_b,g) (B x L, for the data part of the
    error) and, for sampled factors, the variance of each layer's trace from the label draws."""

    factors: dict[str, KroneckerFactors]
    backward_passes: int
    batch_traces: torch.Tensor
    draw_variances: torch.Tensor


def kronecker_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers K-FAC factorises: compressible (Linear, Conv2d) layers with a trainable weight."""
    layers = {name: m for name, m in compressible_layers(model).items() if m.weight.requires_grad}
    if not layers:
        raise InputError("K-FAC factorises Linear and Conv2d layers, and the model has none with trainable "
                         "weights; use method='hutchinson' or 'gauss-newton'")
    return layers


def collect_factors(model: nn.Module, batches: list[Batch], total_samples: int, loss: str, exact: bool,
                    seed: int = 0, on_batch: Callable[[int], None] = lambda n: None) -> FactorPasses:
    """K-FAC (``exact=False``) or KFLR (``exact=True``) factors of every layer of
    ``kronecker_layers(model)`` over ``batches`` (``total_samples`` over all ranks), model in eval
    mode; ``on_batch(1)`` after each batch (a progress bar)."""
    layers = kronecker_layers(model)
    inputs = {name: StatsAccumulator(module) for name, module in layers.items()}
    outputs = {name: _OutputFactor(module, MC_SAMPLES if not exact else 1) for name, module in layers.items()}
    generator = torch.Generator().manual_seed(seed)
    handles = [m.register_forward_pre_hook(_input_hook(inputs[n])) for n, m in layers.items()]
    handles += [m.register_forward_hook(_output_hook(outputs[n])) for n, m in layers.items()]
    passes, batch_traces = 0, []
    try:
        for batch in batches:
            before = {n: (acc.products.diagonal(dim1=1, dim2=2).sum(1).clone(), acc.count) for n, acc in inputs.items()}
            set_batch(inputs.values(), batch.inputs)
            with torch.enable_grad():
                output = model(*batch.inputs)
                count, direction = _directions(loss, output, exact, generator)
                kept = [t for o in outputs.values() for t in o.tensors]
                for index in range(count):
                    grads = torch.autograd.grad(output, kept, direction(index), retain_graph=index < count - 1,
                                                allow_unused=True)
                    _distribute(outputs.values(), grads, 0 if exact else index)
                    passes += 1
            for factor in outputs.values():
                factor.end_batch()
            batch_traces.append(_batch_traces(inputs, outputs, before, len(batch)))
            on_batch(1)
    finally:
        for handle in handles:
            handle.remove()
    factors = {n: KroneckerFactors(_augmented_input(inputs[n], layers[n]), outputs[n].result(total_samples))
               for n in layers}
    variances = torch.stack([outputs[n].draw_variance(factors[n].input, total_samples) for n in layers])
    return FactorPasses(factors, passes, torch.stack(batch_traces), all_reduce_sum(variances))


class _OutputFactor:
    """Running Σ g gᵀ per group of one layer's output gradients, and the per-sample spread of
    its trace over label draws."""

    def __init__(self, module: nn.Module, draws: int) -> None:
        self.conv = isinstance(module, nn.Conv2d)
        self.groups = module.groups if self.conv else 1
        self.channels = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        size = self.channels // self.groups
        self.sums = torch.zeros(self.groups, size, size, dtype=torch.float64)
        self.draws = draws
        self.tensors: list[torch.Tensor] = []  # this batch's layer outputs (one per call of the layer)
        self.per_sample: list[torch.Tensor] = []  # per draw: [B, groups] Σ‖g‖² of each sample
        self.spread = torch.zeros(self.groups, self.groups, dtype=torch.float64)
        self.batch_trace = torch.zeros(self.groups, dtype=torch.float64)

    def add(self, gradient: torch.Tensor, draw: int) -> None:
        """One call's output gradient ([B, ..., out] Linear, [B, out, H, W] conv) for label draw ``draw``."""
        channels_last = gradient.movedim(1, -1) if self.conv else gradient
        rows = channels_last.reshape(gradient.shape[0], -1, self.groups, self.channels // self.groups)
        rows = rows.double() / self.draws**0.5
        self.sums += torch.einsum("nrgi,nrgj->gij", rows, rows)
        squares = rows.pow(2).sum(dim=(1, 3))
        if draw < len(self.per_sample):
            self.per_sample[draw] += squares
        else:
            self.per_sample.append(squares)

    def end_batch(self) -> None:
        """Fold this batch's per-sample draws into the spread Σ_n Σ_m (x_nm − x̄_n)(x_nm − x̄_n)ᵀ."""
        if self.per_sample:
            draws = torch.stack(self.per_sample) * self.draws  # undo the 1/M weighting per draw
            self.batch_trace = draws.mean(dim=0).sum(dim=0)
            centred = draws - draws.mean(dim=0, keepdim=True)
            self.spread += torch.einsum("mng,mnh->gh", centred, centred)
        else:
            self.batch_trace = torch.zeros(self.groups, dtype=torch.float64)
        self.tensors, self.per_sample = [], []

    def result(self, total_samples: int) -> torch.Tensor:
        return all_reduce_sum(self.sums.clone()) / total_samples

    def draw_variance(self, input_factor: torch.Tensor, total_samples: int) -> torch.Tensor:
        """Variance of Tr(G ⊗ A) from the label draws: wᵀ C w / N² with w_g = Tr(A_g) and C the
        per-sample covariance of the mean over M draws, Σ_n spread_n / ((M − 1) M); 0 for KFLR."""
        if self.draws < 2:
            return torch.zeros((), dtype=torch.float64)
        weights = _traces(input_factor)
        return weights @ self.spread @ weights / ((self.draws - 1) * self.draws * total_samples**2)


def _directions(loss: str, output: torch.Tensor, exact: bool,
                generator: torch.Generator) -> tuple[int, Callable[[int], torch.Tensor]]:
    """How many output-space vectors u, and the i-th: with Σ u uᵀ = each sample's output Hessian,
    the columns S e_i of its factor (exact, one per output dimension), or ``MC_SAMPLES``
    sampled-label gradients (each with E[u uᵀ] = the Hessian)."""
    if not exact:
        return MC_SAMPLES, lambda index: _sampled_gradient(loss, output, generator)
    factor = output_factor(loss)

    def column(index: int) -> torch.Tensor:
        probe = torch.zeros(output.shape[0], output[0].numel(), dtype=output.dtype)
        probe[:, index] = 1
        return factor(output, probe.view_as(output))

    return output[0].numel(), column


def _sampled_gradient(loss: str, output: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """∇_f ℓ(f, y) of a label y drawn from the model's predictive distribution: p − onehot(y) with
    y ~ softmax(f) over dim 1 (divided by √positions, as the factor is), or −ε, ε ~ N(0, I)."""
    if loss != "ce":
        return torch.randn(output.shape, generator=generator, dtype=torch.float64).to(output.dtype)
    p = torch.softmax(output.detach().double(), dim=1)
    flat = p.movedim(1, -1).reshape(-1, p.shape[1])
    labels = torch.multinomial(flat, 1, generator=generator).squeeze(1)
    onehot = torch.nn.functional.one_hot(labels, p.shape[1]).double().reshape(p.movedim(1, -1).shape).movedim(-1, 1)
    positions = output[0].numel() // output.shape[1]
    return ((p - onehot) / positions**0.5).to(output.dtype)


def _distribute(outputs, grads: tuple, draw: int) -> None:
    index = 0
    for factor in outputs:
        for tensor in factor.tensors:
            gradient = grads[index]
            factor.add(torch.zeros_like(tensor) if gradient is None else gradient.detach(), draw)
            index += 1


def _batch_traces(inputs: dict[str, StatsAccumulator], outputs: dict[str, _OutputFactor], before: dict,
                  samples: int) -> torch.Tensor:
    """t_b per layer: Σ_g Tr(A_b,g)·Tr(G_b,g) over this batch alone (bias row included in A)."""
    traces = []
    for name, acc in inputs.items():
        squares, count = before[name]
        rows = max(acc.count - count, 1)
        bias = 1.0 if acc.module.bias is not None and acc.module.bias.requires_grad else 0.0
        input_trace = (acc.products.diagonal(dim1=1, dim2=2).sum(1) - squares) / rows + bias
        traces.append((input_trace * outputs[name].batch_trace / samples).sum())
    return torch.stack(traces)


def _augmented_input(accumulator: StatsAccumulator, module: nn.Module) -> torch.Tensor:
    """A = Σ x xᵀ / R per group, with the row and column of the appended 1 when the layer has a
    trainable bias: [[Σ x xᵀ/R, x̄], [x̄ᵀ, 1]]."""
    stats = accumulator.result()
    second = stats.hessian / 2
    if module.bias is None or not module.bias.requires_grad:
        return second
    mean = stats.mean.unsqueeze(2)
    top = torch.cat([second, mean], dim=2)
    bottom = torch.cat([mean.transpose(1, 2), torch.ones(stats.groups, 1, 1, dtype=torch.float64)], dim=2)
    return torch.cat([top, bottom], dim=1)


def _input_hook(accumulator: StatsAccumulator):
    def hook(module: nn.Module, args: tuple) -> None:
        accumulator.add(args[0])

    return hook


def _output_hook(factor: _OutputFactor):
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if output.requires_grad:
            factor.tensors.append(output)

    return hook


def _traces(factor: torch.Tensor) -> torch.Tensor:
    return factor.diagonal(dim1=1, dim2=2).sum(dim=1)


def _top(matrix: torch.Tensor, k: int) -> torch.Tensor:
    return torch.linalg.eigvalsh(matrix).flip(0)[:k].clamp_min(0.0)
