"""The compressible layer, defined once: a layer whose weight the planner plans, the quantizer
quantizes, the pruner prunes and the exporter writes.

Conv2d and Linear only. Conv1d and Conv3d are left float by every stage (the exporter, the
quantizer and channel pruning handle 4-D conv weights and 2-D linear weights), so the planner
never plans them and a recipe naming one is refused (``compress.recipe.check``).

A layer whose weight is tied to another module's (a language model's output head sharing the
input embedding matrix) is not compressible either: quantizing or pruning the head would change
one side of the tie only (the embedding lookup would stay float), or untie the two silently. It
stays float, with its embedding.
"""

from __future__ import annotations

from torch import nn

LAYER_KINDS: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


def is_compressible(module: nn.Module) -> bool:
    """Whether ``module`` is a layer the stages compress (subclasses included: quantized twins)."""
    return isinstance(module, LAYER_KINDS)


def compressible_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The compressible layers of ``model`` by module name, in module order; layers whose weight
    is tied to another module's are left out (module docstring)."""
    tied = {key for key, group in _named_groups(model).items() if len(group) > 1}
    return {name: module for name, module in model.named_modules()
            if is_compressible(module) and id(module.weight) not in tied}


def tied_parameters(model: nn.Module) -> tuple[tuple[str, ...], ...]:
    """Groups of parameter names that are one tensor (e.g. ``('model.transformer.wte.weight',
    'model.lm_head.weight')``): compressing one name of a group changes all of them."""
    return tuple(tuple(name for name, _ in group) for group in _named_groups(model).values() if len(group) > 1)


def _named_groups(model: nn.Module) -> dict[int, list[tuple[str, nn.Parameter]]]:
    """Every parameter's (name, tensor) pairs keyed by the tensor's identity."""
    groups: dict[int, list[tuple[str, nn.Parameter]]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(parameter), []).append((name, parameter))
    return groups


def out_width(layer: nn.Module) -> int:
    """Output channels of a Conv2d, output features of a Linear."""
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
