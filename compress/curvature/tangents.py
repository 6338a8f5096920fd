"""Jacobian-vector products J v that reuse the primal pass.

A forward-mode pass (``torch.func.jvp`` or dual tensors) computes the primal f(θ) alongside the
tangent J v: for a linear layer y = x Wᵀ + b that is three matrix products, x Wᵀ for the primal
and ẋ Wᵀ + x Ẇᵀ (+ ḃ) for the tangent. The primal is the same for every v, so a product that
takes each such layer's primal output from a cache filled on the first call does two of the
three; on a MiniLM encoder the linear layers' matrix products are most of a forward pass, and
J v costs ~1.5x less (``benchmarks/README.md``, MiniLM curvature). Two exact rules:

- bilinear functions of (input, weight) plus a bias (linear, 1-3d convolutions):
  ḟ = f(ẋ, W) + f(x, Ẇ, ḃ), with the call's own stride, padding, groups;
- elementwise activations (GELU, SiLU, ReLU, tanh, sigmoid): ḟ = f'(x) ⊙ ẋ, with f(x) and
  f'(x) cached (f'(x) from one forward-mode evaluation with a unit tangent).

Every other operation runs as ordinary forward-mode AD, its primal recomputed from the cached
values (cheap elementwise work, attention scores, normalisation); a model without such layers
gets plain forward-mode AD, exact and no faster.

The cache is indexed by call order, so the forward must make the same calls in the same order on
every pass: true at fixed weights and inputs for deterministic models (the curvature stage
refuses nondeterministic ones); a shape mismatch is caught and raised, and a cached output that
the forward changed in place (its version counter moved) is recomputed.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

BILINEAR = (F.linear, F.conv1d, F.conv2d, F.conv3d)
ELEMENTWISE = (F.gelu, F.silu, F.relu, torch.relu, torch.tanh, torch.sigmoid)


def jacobian_vector_product(forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                            params: dict[str, torch.Tensor], tangent: dict[str, torch.Tensor],
                            primals: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward(params), J v) with v = ``tangent`` (per parameter, shaped as ``params``), by
    forward-mode AD with the rules above. ``primals``: this forward's cache (a list, empty on the
    first call and filled by it; keep one per distinct forward); None recomputes every primal."""
    with forward_ad.dual_level(), torch.no_grad(), _CachedPrimalTangents(primals):
        duals = {name: forward_ad.make_dual(value, tangent[name]) for name, value in params.items()}
        output, output_tangent = forward_ad.unpack_dual(forward(duals))
    if output_tangent is None:  # the output does not depend on the parameters
        output_tangent = torch.zeros_like(output)
    return output, output_tangent


class _CachedPrimalTangents(TorchFunctionMode):
    """Intercepts the ``BILINEAR`` and ``ELEMENTWISE`` functions inside a forward-mode pass:
    primal output (and an elementwise function's derivative) from the cache or computed, tangent
    f(ẋ, W) + f(x, Ẇ, ḃ), resp. f'(x) ẋ."""

    def __init__(self, primals: list | None) -> None:
        super().__init__()
        self.primals, self.calls = primals, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in BILINEAR:
            return self._bilinear(func, list(args), kwargs)
        in_place = kwargs.get("inplace", False) or any(arg is True for arg in args[1:])  # F.relu(x, True)
        if func in ELEMENTWISE and args and not in_place:
            return self._elementwise(func, args[0], args[1:], kwargs)
        return func(*args, **kwargs)

    def _bilinear(self, func, args: list, kwargs: dict) -> torch.Tensor:
        inputs = [args.pop(0) if args else kwargs.pop(key, None) for key in ("input", "weight", "bias")]
        (x, x_dot), (weight, weight_dot), (bias, bias_dot) = (
            forward_ad.unpack_dual(value) if isinstance(value, torch.Tensor) else (value, None) for value in inputs)
        primal = self._cached(lambda: func(x, weight, bias, *args, **kwargs))
        if x_dot is None and weight_dot is None and bias_dot is None:
            return primal
        if weight_dot is None and bias_dot is None:
            tangent = func(x_dot, weight, None, *args, **kwargs)
        else:
            weight_dot = torch.zeros_like(weight) if weight_dot is None else weight_dot
            tangent = func(x, weight_dot, bias_dot, *args, **kwargs)
            if x_dot is not None and func is F.linear:  # ẋ Wᵀ accumulated in place: no extra pass
                tangent.view(-1, tangent.shape[-1]).addmm_(x_dot.reshape(-1, x_dot.shape[-1]), weight.t())
            elif x_dot is not None:
                tangent = tangent + func(x_dot, weight, None, *args, **kwargs)
        return self._dual(primal, tangent)

    def _elementwise(self, func, value: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        x, x_dot = forward_ad.unpack_dual(value) if isinstance(value, torch.Tensor) else (value, None)
        if x_dot is None:
            return func(value, *args, **kwargs)
        primal, derivative = self._cached(lambda: forward_ad.unpack_dual(
            func(forward_ad.make_dual(x, torch.ones_like(x)), *args, **kwargs)))
        self._check(derivative.shape, x_dot.shape)
        return forward_ad.make_dual(primal, derivative * x_dot)

    def _cached(self, compute: Callable[[], object]) -> object:
        """This call's primal values: from the cache when it holds them unmodified, else computed
        (and cached). A cached tensor changed in place by the forward (``out += identity``)
        since it was stored is recomputed: such calls save nothing but stay exact."""
        index, self.calls = self.calls, self.calls + 1
        if self.primals is None:
            return compute()
        if index < len(self.primals) and _versions(self.primals[index][0]) == self.primals[index][1]:
            return self.primals[index][0]
        value = compute()
        entry = (value, _versions(value))
        if index == len(self.primals):
            self.primals.append(entry)
        else:
            self.primals[index] = entry
        return value

    def _dual(self, primal: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
        self._check(primal.shape, tangent.shape)
        return forward_ad.make_dual(primal, tangent)

    def _check(self, cached: torch.Size, current: torch.Size) -> None:
        if cached != current:
            raise RuntimeError(f"intercepted call {self.calls - 1} met a {tuple(current)} tangent where the cache "
                               f"holds {tuple(cached)}: the forward changed between passes")


def _versions(value: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[int, ...]:
    """The in-place version counters of a cached tensor (or tuple of tensors)."""
    return tuple(t._version for t in (value if isinstance(value, tuple) else (value,)))
