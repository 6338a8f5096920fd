"""Which activation tensors carry a quantizer (decided once, from the torch.fx graph).

ONNX Runtime fuses DequantizeLinear → Conv/Gemm → QuantizeLinear into QLinearConv/QGemm only when
the layer's inputs come from DequantizeLinear AND its output goes into QuantizeLinear; Q/DQ around
MaxPool/Reshape/Flatten with equal parameters are dropped so those ops run on integers. So:

- an activation-quantized layer gets an OUTPUT quantizer unless its output is a model output
  (then ORT's QGemm / MatMulIntegerToFloat produce float); if a ReLU is its only consumer, the
  quantizer is calibrated on relu(y) — Q(relu(y)) = relu(Q(y)) whenever 0 is on the grid, so the
  ReLU may sit before or after it;
- its INPUT needs a quantizer of its own unless the input is an upstream quantized layer's output
  reached through grid-preserving ops only (ReLU, max-pool, flatten/reshape, identity): Q commutes
  with those (Q is monotone and Q(0) = 0), so the input already lies on the upstream grid.

Models torch.fx cannot trace get input quantizers only (the TensorRT placement; ORT then fuses
less). The exporter places Q/DQ in the ONNX graph by the same rules, so parity holds by design.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_GRID_FUNCTIONS = {
    torch.relu,
    nn.functional.relu,
    nn.functional.max_pool1d,
    nn.functional.max_pool2d,
    nn.functional.max_pool3d,
    torch.flatten,
    torch.reshape,
}
_GRID_METHODS = {"relu", "flatten", "view", "reshape", "contiguous"}
_GRID_MODULES = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Flatten, nn.Identity, nn.Dropout)
_RELUS = {torch.relu, nn.functional.relu, "relu"}


@dataclass(frozen=True)
class Placement:
    """Where one layer's activation quantizers go (see the module docstring)."""

    input_from: str | None
    output: bool
    output_relu: bool


def place_quantizers(model: nn.Module, layers: set[str]) -> dict[str, Placement]:
    """Placement of the activation quantizers of ``layers`` (names of activation-quantized layers)."""
    from compress.vocab.tracing import fx_graph

    graph = fx_graph(model)
    if graph is None:  # untraceable: input quantizers only
        return {name: Placement(None, False, False) for name in layers}
    nodes = {str(node.target): node for node in graph.nodes if node.op == "call_module" and node.target in layers}
    outputs = {name: not _feeds_model_output(model, node) for name, node in nodes.items()}
    placements = {}
    for name, node in nodes.items():
        origin = _grid_origin(model, node.args[0])
        upstream = str(origin.target) if origin is not None and origin.op == "call_module" else None
        placements[name] = Placement(
            input_from=upstream if outputs.get(upstream, False) else None,
            output=outputs[name],
            output_relu=outputs[name] and _only_consumer_is_relu(model, node),
        )
    missing = layers - placements.keys()
    return placements | {name: Placement(None, False, False) for name in missing}


def _is_grid_preserving(model: nn.Module, node: "torch.fx.Node") -> bool:
    if node.op == "call_function":
        return node.target in _GRID_FUNCTIONS
    if node.op == "call_method":
        return node.target in _GRID_METHODS
    if node.op == "call_module":
        return isinstance(model.get_submodule(str(node.target)), _GRID_MODULES)
    return False


def _grid_origin(model: nn.Module, value: object) -> "torch.fx.Node | None":
    """Walk back from ``value`` through grid-preserving ops; the first other node reached."""
    import torch.fx

    while isinstance(value, torch.fx.Node) and _is_grid_preserving(model, value):
        value = value.args[0]
    return value if isinstance(value, torch.fx.Node) else None


def _skip_identities(model: nn.Module, node: "torch.fx.Node") -> "torch.fx.Node":
    """Follow a chain of single-consumer ``nn.Identity`` modules (folded BatchNorms) forward."""
    while len(node.users) == 1:
        user = next(iter(node.users))
        if not (user.op == "call_module" and isinstance(model.get_submodule(str(user.target)), nn.Identity)):
            break
        node = user
    return node


def _feeds_model_output(model: nn.Module, node: "torch.fx.Node") -> bool:
    return any(user.op == "output" for user in _skip_identities(model, node).users)


def _only_consumer_is_relu(model: nn.Module, node: "torch.fx.Node") -> bool:
    users = list(_skip_identities(model, node).users)
    if len(users) != 1:
        return False
    user = users[0]
    if user.op == "call_module":
        return isinstance(model.get_submodule(str(user.target)), nn.ReLU)
    return user.op in ("call_function", "call_method") and user.target in _RELUS
