"""Jacobian-vector products J v that reuse the primal outputs of the bilinear layers.

A forward-mode pass (``torch.func.jvp`` or dual tensors) computes the primal f(θ) alongside the
tangent J v: for a linear layer y = x Wᵀ + b that is three matrix products, x Wᵀ for the primal
and ẋ Wᵀ + x Ẇᵀ (+ ḃ) for the tangent. The primal is the same for every v, so a product that
takes each bilinear layer's primal output from a cache filled on the first call does two of the
three: on a MiniLM encoder the matrix products of its linear layers are most of a forward pass,
and J v costs ~30% less (``benchmarks/README.md``, MiniLM curvature). The rule is exact for
any function bilinear in (input, weight) plus a bias: linear and 1-3d convolutions (f(ẋ, W) +
f(x, Ẇ, ḃ) with the call's own stride, padding, ...). Every other operation runs as ordinary
forward-mode AD (its primal recomputed from the cached values, which is cheap elementwise work);
a model without such layers gets plain forward-mode AD, exact and no faster.

The cache is indexed by call order, so the forward must make the same bilinear calls in the same
order on every pass: true at fixed weights and inputs for deterministic models (the curvature
stage refuses nondeterministic ones); a shape mismatch is caught and raised.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

BILINEAR = (F.linear, F.conv1d, F.conv2d, F.conv3d)


def jacobian_vector_product(forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                            params: dict[str, torch.Tensor], tangent: dict[str, torch.Tensor],
                            primals: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward(params), J v) with v = ``tangent`` (per parameter, shaped as ``params``), by
    forward-mode AD with the bilinear tangent rule. ``primals``: the cache of bilinear primal
    outputs of this forward (empty on the first call, filled by it); None recomputes them."""
    with forward_ad.dual_level(), torch.no_grad(), _BilinearTangents(primals):
        duals = {name: forward_ad.make_dual(value, tangent[name]) for name, value in params.items()}
        output, output_tangent = forward_ad.unpack_dual(forward(duals))
    if output_tangent is None:  # the output does not depend on the parameters
        output_tangent = torch.zeros_like(output)
    return output, output_tangent


class _BilinearTangents(TorchFunctionMode):
    """Intercepts the ``BILINEAR`` functions inside a forward-mode pass: primal output from the
    cache (or computed), tangent f(ẋ, W) + f(x, Ẇ, ḃ)."""

    def __init__(self, primals: list[torch.Tensor] | None) -> None:
        super().__init__()
        self.primals, self.calls = primals, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func not in BILINEAR:
            return func(*args, **kwargs)
        args = list(args)
        inputs = [args.pop(0) if args else kwargs.pop(key, None) for key in ("input", "weight", "bias")]
        (x, x_dot), (weight, weight_dot), (bias, bias_dot) = (
            forward_ad.unpack_dual(value) if isinstance(value, torch.Tensor) else (value, None) for value in inputs)
        primal = self._primal(lambda: func(x, weight, bias, *args, **kwargs))
        pieces = []
        if x_dot is not None:
            pieces.append(func(x_dot, weight, None, *args, **kwargs))
        if weight_dot is not None or bias_dot is not None:
            weight_dot = torch.zeros_like(weight) if weight_dot is None else weight_dot
            pieces.append(func(x, weight_dot, bias_dot, *args, **kwargs))
        if not pieces:
            return primal
        tangent = pieces[0] if len(pieces) == 1 else pieces[0] + pieces[1]
        if tangent.shape != primal.shape:
            raise RuntimeError(f"bilinear call {self.calls} gave a {tuple(tangent.shape)} tangent for a cached "
                               f"{tuple(primal.shape)} output: the forward changed between passes")
        return forward_ad.make_dual(primal, tangent)

    def _primal(self, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """This call's primal output: from the cache when it holds one, else computed (and cached)."""
        index, self.calls = self.calls, self.calls + 1
        if self.primals is None:
            return compute()
        if index == len(self.primals):
            self.primals.append(compute())
        return self.primals[index]
