"""Parameters as one flat vector, split into per-layer blocks.

A layer is a module that owns parameters directly (its weight and bias); its block is the
coordinates of those parameters in the flat vector.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and flat offsets of the trainable parameters, grouped by owning module."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    layers: dict[str, tuple[int, int]]  # module fqn -> [start, stop) in the flat vector

    @property
    def dim(self) -> int:
        return sum(s.numel() for s in self.shapes)

    @staticmethod
    def of(model: nn.Module) -> "ParamLayout":
        names, shapes, layers, offset = [], [], {}, 0
        seen: set[int] = set()
        for module_name, module in model.named_modules():
            start = offset
            for local, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                names.append(f"{module_name}.{local}" if module_name else local)
                shapes.append(param.shape)
                offset += param.numel()
            if offset > start:
                layers[module_name or "(root)"] = (start, offset)
        return ParamLayout(tuple(names), tuple(shapes), layers)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` shaped as each parameter, keyed by name."""
        sizes = [s.numel() for s in self.shapes]
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(sizes), self.shapes)}

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def block_dots(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-layer inner products <a_i, b_i>, in ``layers`` order (float64)."""
        products = (a.double() * b.double())
        return torch.stack([products[start:stop].sum() for start, stop in self.layers.values()])

    def block_squared_norms(self, tensors: dict[str, torch.Tensor | None], count: int) -> torch.Tensor:
        """Per-layer ‖a_i‖² of k vectors given per parameter (k x shape each; None: zero), in
        ``layers`` order, accumulated in float64 without a flat copy: k x layers."""
        norms = torch.zeros(count, len(self.layers), dtype=torch.float64)
        offset = 0
        starts = [start for start, _ in self.layers.values()]
        for name, shape in zip(self.names, self.shapes):
            value = tensors[name]
            if value is not None:
                layer = bisect.bisect_right(starts, offset) - 1
                norms[:, layer] += torch.linalg.vector_norm(value.reshape(count, -1), dim=1, dtype=torch.float64) ** 2
            offset += shape.numel()
        return norms
