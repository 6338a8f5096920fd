"""Matrix-free curvature products over a whole dataset.

For the mean loss L(θ) = Σ_b (n_b / N) ℓ_b(θ) over batches b, the Hessian-vector product is
Hv = Σ_b (n_b / N) ∇²ℓ_b(θ) v, computed per batch without forming ∇²ℓ_b:

- ``forward-over-reverse``: Hv = d/dt ∇ℓ(θ + t v)|₀, a ``torch.func.jvp`` of ``torch.func.grad``
  (Pearlmutter 1994);
- ``reverse-over-reverse``: Hv = ∇(∇ℓ(θ)·v), double backward; with ``reuse_graphs`` the graph of
  ∇ℓ_b is built once per batch and kept, so each later product is one backward through it
  (memory: one double-backward graph per batch);
- ``ggn``: Gauss-Newton product Gv = Jᵀ ∇²_f ℓ J v (Schraudolph 2002), jvp → output Hessian → vjp.

``matmat`` multiplies k vectors in one pass per batch (batched gradients through the kept graphs,
``vmap`` over forward-mode tangents); ``pull_back`` / ``pull_back_all`` (Jᵀu) and ``push_forward``
(Jv, tangents only after the first call, ``compress.curvature.tangents``) are the output-space
halves the Gauss-Newton probes and the Gram spectrum use.

The model is evaluated in eval mode at fixed weights. Under ``torch.distributed`` each rank holds
a shard of the batches and products are summed across ranks, so every rank sees the same Hv.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from compress.curvature.distributed import all_reduce_sum
from compress.curvature.losses import LossFn
from compress.curvature.params import ParamLayout
from compress.curvature.tangents import jacobian_vector_product
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
    _outputs: dict = field(init=False, default_factory=dict)  # batch index -> output with its forward graph
    _primals: dict = field(init=False, default_factory=dict)  # batch index -> its J v cache (tangents.py)

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
        see = None if on_batch is None else (lambda index, shares: on_batch(index, shares[0]))
        return self.matmat(vector[None], see)[0]

    def matmat(self, vectors: torch.Tensor,
               on_batch: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """The curvature matrix times each row of ``vectors`` (k x dim), all k in one pass per
        batch (autograd's batched gradients / ``vmap`` over tangents); counts k products.
        ``on_batch(global batch index, k x dim shares)`` sees each batch's shares."""
        tangents = self.unflatten_batched(vectors.to(self.dtype))
        total = torch.zeros(len(vectors), self.dim, dtype=self.dtype)
        with _math_attention():
            for index, batch in enumerate(self.batches):
                share = (len(batch) / self.total_samples) * self._flatten_batched(self._batch_product(index, tangents),
                                                                                       len(vectors))
                if on_batch is not None:
                    on_batch(self.batch_ids[index], share)
                total += share
        self.num_products += len(vectors)
        return all_reduce_sum(total)

    def output(self, index: int) -> torch.Tensor:
        """Batch ``index``'s output with its graph to the weights; kept for later passes when
        ``reuse_graphs`` (memory: one forward graph per batch)."""
        if index in self._outputs:
            return self._outputs[index]
        with torch.enable_grad(), _math_attention():
            output = self._forward(self._leaves, self.batches[index])
        if self.reuse_graphs:
            self._outputs[index] = output
        return output

    def pull_back(self, index: int, directions: torch.Tensor, output: torch.Tensor | None = None) -> torch.Tensor:
        """Jᵀ u for each of the k rows u of ``directions`` (k x batch output), flat: k x dim
        (``pull_back_params``)."""
        return self._flatten_batched(self.pull_back_params(index, directions, output), len(directions))

    def pull_back_params(self, index: int, directions: torch.Tensor,
                         output: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
        """Jᵀ u for each of the k rows u of ``directions`` (k x batch output), per parameter (k x
        shape; None where the output does not use it): one backward pass through the batch's
        forward graph (``output``, default ``self.output(index)``; batched gradients when k > 1)."""
        output, leaves = self.output(index) if output is None else output, list(self._leaves.values())
        batched = len(directions) > 1
        with torch.enable_grad(), _math_attention():
            pulled = torch.autograd.grad(output, leaves, directions if batched else directions[0],
                                         retain_graph=self.reuse_graphs, allow_unused=True, is_grads_batched=batched)
        return {name: None if value is None else value if batched else value[None]
                for name, value in zip(self.layout.names, pulled)}

    def push_forward(self, index: int, tangents: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(the batch's output, J v for each of the k tangents, k x output): forward-mode AD with
        the linear/convolution outputs and activations cached per batch when ``reuse_graphs``
        (``compress.curvature.tangents``; memory: those values), so later products compute
        tangents only."""
        batch = self.batches[index]
        primals = self._primals.setdefault(index, []) if self.reuse_graphs else None
        count = len(next(iter(tangents.values())))
        with _math_attention():
            products = [jacobian_vector_product(lambda p: self._forward(p, batch), self.params,
                                                {name: t[row] for name, t in tangents.items()}, primals)
                        for row in range(count)]
        return products[0][0], torch.stack([tangent for _, tangent in products])

    def pull_back_all(self, directions: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Σ_b J_bᵀ u_b per parameter (k x shape) for k directions per batch (``directions[b]``:
        k x batch b's output): one backward pass through all batches' forward graphs, the sum
        accumulated by autograd (no flat copies per batch)."""
        leaves, count = list(self._leaves.values()), len(directions[0])
        outputs = [self.output(index) for index in range(len(self.batches))]
        batched = count > 1
        with torch.enable_grad(), _math_attention():
            pulled = torch.autograd.grad(outputs, leaves, [u if batched else u[0] for u in directions],
                                         retain_graph=self.reuse_graphs, allow_unused=True,
                                         is_grads_batched=batched)
        return {name: torch.zeros(count, *shape, dtype=self.dtype) if value is None
                else value if batched else value[None]
                for name, shape, value in zip(self.layout.names, self.layout.shapes, pulled)}

    def unflatten_batched(self, vectors: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter k x shape views of k flat vectors (k x dim)."""
        sizes = [s.numel() for s in self.layout.shapes]
        return {n: t.view(len(vectors), *s) for n, t, s in zip(self.layout.names, vectors.split(sizes, dim=1),
                                                                 self.layout.shapes)}

    def _flatten_batched(self, tensors: dict[str, torch.Tensor | None], count: int) -> torch.Tensor:
        """k x dim from per-parameter k x shape tensors (None: a parameter the output does not use)."""
        return torch.cat([torch.zeros(count, s.numel(), dtype=self.dtype) if tensors[n] is None
                          else tensors[n].reshape(count, -1) for n, s in zip(self.layout.names, self.layout.shapes)],
                         dim=1)

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

    def _batch_product(self, index: int, tangents: dict) -> dict:
        """Batch ``index``'s curvature times each of the k tangents (per parameter k x shape)."""
        batch, reference = self.batches[index], self.references[index]
        if self.product == "forward-over-reverse":
            gradient = grad(lambda p: self._loss(p, batch, reference))
            return vmap(lambda t: jvp(gradient, (self.params,), (t,))[1])(tangents)
        if self.product == "reverse-over-reverse":
            return self._double_backward(index, tangents)
        return self._ggn_product(index, tangents)

    def _double_backward(self, index: int, tangents: dict) -> dict:
        """Hv = ∇(∇ℓ·v) = (∂∇ℓ/∂θ)ᵀ v (H is symmetric): a backward pass of the gradient along v,
        through the gradient's graph (kept per batch with ``reuse_graphs``)."""
        if not self.reuse_graphs:
            leaves = {n: p.detach().requires_grad_() for n, p in self.params.items()}
            return _backward_along(self._gradient_with_graph(leaves, index), leaves, tangents, keep_graph=False)
        if index not in self._graphs:
            self._graphs[index] = self._gradient_with_graph(self._leaves, index)
        return _backward_along(self._graphs[index], self._leaves, tangents, keep_graph=True)

    def _gradient_with_graph(self, leaves: dict, index: int) -> tuple:
        with torch.enable_grad():
            loss = self._loss(leaves, self.batches[index], self.references[index])
            return torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)

    def _ggn_product(self, index: int, tangents: dict) -> dict:
        """Gv = Jᵀ (∇²_f ℓ) J v: forward-mode J v, the output Hessian by forward-over-reverse on
        the loss alone, then Jᵀ through the batch's (kept) forward graph."""
        output, jacobian_tangents = self.push_forward(index, tangents)
        output_gradient = grad(lambda out: self.loss(out, self.references[index]))
        curvature = vmap(lambda t: jvp(output_gradient, (output.detach(),), (t,))[1])(jacobian_tangents)
        return self.unflatten_batched(self.pull_back(index, curvature))


def _backward_along(gradient: tuple, leaves: dict, tangents: dict, keep_graph: bool) -> dict:
    """(∂∇ℓ/∂θ)ᵀ v for each of the k tangents: one (batched) backward pass through the gradient's
    graph. Parameters the gradient does not depend on get None (a zero block)."""
    used = [(g, t) for g, t in zip(gradient, tangents.values()) if g is not None and g.requires_grad]
    if not used:
        return dict.fromkeys(leaves)
    count = len(next(iter(tangents.values())))
    outputs, directions = zip(*used)
    directions = directions if count > 1 else tuple(t[0] for t in directions)
    with torch.enable_grad():
        product = torch.autograd.grad(outputs, list(leaves.values()), directions, retain_graph=keep_graph,
                                      allow_unused=True, is_grads_batched=count > 1)
    return dict(zip(leaves, product))


def _math_attention():
    """Scaled-dot-product attention through the math kernel: the CPU flash kernel supports
    neither double backward nor forward-mode AD."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older torch
        return nullcontext()
    return sdpa_kernel(SDPBackend.MATH)
