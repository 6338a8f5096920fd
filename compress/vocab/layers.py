"""The compressible layer, defined once: a layer whose weight the planner plans, the quantizer
quantizes, the pruner prunes and the exporter writes.

Conv2d and Linear only. Conv1d and Conv3d are left float by every stage (the exporter, the
quantizer and channel pruning handle 4-D conv weights and 2-D linear weights), so the planner
never plans them and a recipe naming one is refused (``compress.recipe.check``).
"""

from __future__ import annotations

from torch import nn

LAYER_KINDS: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


def is_compressible(module: nn.Module) -> bool:
    """Whether ``module`` is a layer the stages compress (subclasses included: quantized twins)."""
    return isinstance(module, LAYER_KINDS)


def compressible_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The compressible layers of ``model`` by module name, in module order."""
    return {name: module for name, module in model.named_modules() if is_compressible(module)}


def out_width(layer: nn.Module) -> int:
    """Output channels of a Conv2d, output features of a Linear."""
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
