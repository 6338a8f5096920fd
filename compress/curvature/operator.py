"""Matrix-free curvature products over a whole dataset.

For the mean loss L(θ) = Σ_b (n_b / N) ℓ_b(θ) over batches b, the Hessian-vector product is
Hv = Σ_b (n_b / N) ∇²ℓ_b(θ) v, computed per batch without forming ∇²ℓ_b:

- ``forward-over-reverse``: Hv = d/dt ∇ℓ(θ + t v)|₀, a ``torch.func.jvp`` of ``torch.func.grad``
  (Pearlmutter 1994);
- ``reverse-over-reverse``: Hv = ∇(∇ℓ(θ)·v), double backward; with ``reuse_graphs`` the graph of
  ∇ℓ_b is built once per batch and kept, so each later product is one backward through it
  (memory: one double-backward graph per batch);
- ``ggn``: Gauss-Newton product Gv = Jᵀ ∇²_f ℓ J v (Schraudolph 2002), jvp → output Hessian → vjp.

The model is evaluated in eval mode at fixed weights. Under ``torch.distributed`` each rank holds
a shard of the batches and products are summed across ranks, so every rank sees the same Hv.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp

from compress.curvature.distributed import all_reduce_sum
from compress.curvature.losses import LossFn
from compress.curvature.params import ParamLayout
from compress.data.source import Batch

@dataclass
class CurvatureOperator:
    """H (or G) as a linear operator on flat parameter vectors; counts the products it computes."""

    model: nn.Module
    batches: list[Batch]  # this rank's shard
    references: list[torch.Tensor]  # per batch: targets (ce) or teacher outputs (distill)
    loss: LossFn
    total_samples: int  # over all ranks
    product: str = "reverse-over-reverse"
    reuse_graphs: bool = True
    batch_ids: list[int] | None = None  # global index of each local batch (default: 0, 1, ...)
    num_batches: int | None = None  # over all ranks (default: the local count)
    num_products: int = 0
    layout: ParamLayout = field(init=False)
    _graphs: dict = field(init=False, default_factory=dict)  # batch index -> gradient with its graph

    def __post_init__(self) -> None:
        self.layout = ParamLayout.of(self.model)
        named = dict(self.model.named_parameters())
        self.params = {n: named[n].detach() for n in self.layout.names}
        frozen = {n: p.detach() for n, p in named.items() if n not in self.params}
        self.constants = {**frozen, **dict(self.model.named_buffers())}
        self._leaves = {n: p.detach().requires_grad_() for n, p in self.params.items()}
        if self.batch_ids is None:
            self.batch_ids = list(range(len(self.batches)))
        if self.num_batches is None:
            self.num_batches = len(self.batches)

    @property
    def batch_sizes(self) -> torch.Tensor:
        """Samples in every batch, by global batch index (all ranks)."""
        sizes = torch.zeros(self.num_batches, dtype=torch.float64)
        for index, batch in zip(self.batch_ids, self.batches):
            sizes[index] = len(batch)
        return all_reduce_sum(sizes)

    @property
    def dim(self) -> int:
        return self.layout.dim

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    def matvec(self, vector: torch.Tensor,
               on_batch: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """The curvature matrix times ``vector`` (flat, length ``dim``): Σ_b (n_b / N) H_b v.
        ``on_batch(global batch index, (n_b / N) H_b v)`` sees each batch's share."""
        tangent = self.layout.unflatten(vector.to(self.dtype))
        total = torch.zeros(self.dim, dtype=self.dtype)
        with _math_attention():
            for index, batch in enumerate(self.batches):
                share = (len(batch) / self.total_samples) * self.layout.flatten(self._batch_product(index, tangent))
                if on_batch is not None:
                    on_batch(self.batch_ids[index], share)
                total += share
        self.num_products += 1
        return all_reduce_sum(total)

    def loss_value(self) -> float:
        """The mean loss over the whole dataset (all ranks)."""
        total = torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for batch, reference in zip(self.batches, self.references):
                total += len(batch) / self.total_samples * self._loss(self.params, batch, reference).double()
        return float(all_reduce_sum(total))

    def _loss(self, params: dict[str, torch.Tensor], batch: Batch, reference: torch.Tensor) -> torch.Tensor:
        return self.loss(self._forward(params, batch), reference)

    def _forward(self, params: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        return functional_call(self.model, {**params, **self.constants}, batch.inputs)

    def _batch_product(self, index: int, tangent: dict) -> dict:
        batch, reference = self.batches[index], self.references[index]
        if self.product == "forward-over-reverse":
            gradient = grad(lambda p: self._loss(p, batch, reference))
            return jvp(gradient, (self.params,), (tangent,))[1]
        if self.product == "reverse-over-reverse":
            return self._double_backward(index, tangent)
        return self._ggn_product(batch, reference, tangent)

    def _double_backward(self, index: int, tangent: dict) -> dict:
        if not self.reuse_graphs:
            leaves = {n: p.detach().requires_grad_() for n, p in self.params.items()}
            return _backward_along(self._gradient_with_graph(leaves, index), leaves, tangent, keep_graph=False)
        if index not in self._graphs:
            self._graphs[index] = self._gradient_with_graph(self._leaves, index)
        return _backward_along(self._graphs[index], self._leaves, tangent, keep_graph=True)

    def _gradient_with_graph(self, leaves: dict, index: int) -> tuple:
        with torch.enable_grad():
            loss = self._loss(leaves, self.batches[index], self.references[index])
            return torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)

    def _ggn_product(self, batch: Batch, reference: torch.Tensor, tangent: dict) -> dict:
        output, jacobian_tangent = jvp(lambda p: self._forward(p, batch), (self.params,), (tangent,))
        output_gradient = grad(lambda out: self.loss(out, reference))
        curvature_tangent = jvp(output_gradient, (output.detach(),), (jacobian_tangent,))[1]
        _, pullback = vjp(lambda p: self._forward(p, batch), self.params)
        return pullback(curvature_tangent)[0]


def _backward_along(gradient: tuple, leaves: dict, tangent: dict, keep_graph: bool) -> dict:
    """∇(∇ℓ · v): one backward pass through the gradient's graph."""
    with torch.enable_grad():
        directional = sum((g * t).sum() for g, t in zip(gradient, tangent.values()) if g is not None)
        product = torch.autograd.grad(directional, list(leaves.values()), retain_graph=keep_graph, allow_unused=True)
    return {n: torch.zeros_like(p) if h is None else h for (n, p), h in zip(leaves.items(), product)}


def _math_attention():
    """Scaled-dot-product attention through the math kernel: the CPU flash kernel supports
    neither double backward nor forward-mode AD."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older torch
        return nullcontext()
    return sdpa_kernel(SDPBackend.MATH)
