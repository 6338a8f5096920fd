"""Groups of coupled channels, found on the torch.fx graph: channels that must be removed together.

Every tensor flowing through the graph carries a *channel space* (dim 1 of NCHW, or the features
of a 2-D tensor). A Conv2d (groups = 1) or Linear opens a new space for its output; the ops below
carry their input's space through, and a residual add merges the spaces of both inputs (union-find),
so one group holds everything tied by the add. Members of a group, by role:

- ``out``: a Conv2d/Linear whose output channels are the group's (weight rows, bias);
- ``dw``: a depthwise Conv2d (groups = in = out channels): its in and out channels are the same;
- ``bn``: a BatchNorm (γ, β, running statistics);
- ``in``: a Conv2d/Linear reading the group (weight columns); after ``flatten(x, 1)`` channel c is
  the block of H·W consecutive features [c·HW, (c+1)·HW) of the next Linear's input.

Removing channel c is exact (the pruned net equals the net with c's activations zeroed where they
are produced) only if everything between producer and consumer is channel-wise and maps 0 to 0:
ReLU-like activations, tanh, GELU, SiLU, max/avg pooling, dropout, identity, flatten, add. Any other
op touching a group (softplus, concatenation, view/reshape, multiplication, ...) leaves the group alone with the reason
recorded, as do model inputs and outputs (never pruned), grouped convs and shared layers.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from compress.vocab.layers import is_compressible, out_width
from compress.vocab.tracing import require_fx_graph

ADDS = (operator.add, operator.iadd, torch.add)
ZERO_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.GELU, nn.SiLU, nn.Hardswish,
                nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity)
ZERO_FUNCTIONS = (torch.relu, torch.relu_, F.relu, F.relu6, F.leaky_relu, F.elu, torch.tanh,
                  F.gelu, F.silu, F.hardswish, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.dropout)
ZERO_METHODS = ("relu", "relu_", "tanh")
SHAPE_METHODS = ("size", "dim")


@dataclass(frozen=True)
class Member:
    """One module's part in a group; ``block``: input features per channel (``in`` of a Linear)."""

    module: str
    role: str
    block: int = 1

    def __str__(self) -> str:
        return f"{self.module}:{self.role}"


@dataclass(frozen=True)
class ChannelGroup:
    """Coupled channels: named by the first module producing them; ``reason`` says why the group
    must be left alone (None: it can be pruned)."""

    name: str
    channels: int
    members: tuple[Member, ...]
    reason: str | None

    @property
    def producers(self) -> tuple[str, ...]:
        return tuple(m.module for m in self.members if m.role in ("out", "dw"))


@dataclass(frozen=True)
class _Value:
    space: int
    flat: bool = False  # after flatten(x, 1): a channel is a block of features


@dataclass
class _Spaces:
    """Union-find over channel spaces, each with its members and reasons."""

    parent: list[int] = field(default_factory=list)
    members: list[list[tuple[int, str, str, bool]]] = field(default_factory=list)  # (order, module, role, flat)
    reasons: list[list[str]] = field(default_factory=list)
    added: int = 0  # members added so far: their graph order

    def new(self, reason: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.members.append([])
        self.reasons.append([] if reason is None else [reason])
        return len(self.parent) - 1

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            space = self.parent[space]
        return space

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.members[a] += self.members[b]
            self.reasons[a] += self.reasons[b]

    def add(self, space: int, module: str, role: str, flat: bool = False) -> None:
        self.members[self.find(space)].append((self.added, module, role, flat))
        self.added += 1

    def refuse(self, space: int, reason: str) -> None:
        self.reasons[self.find(space)].append(reason)


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """Every group with a Conv2d/Linear producer, in graph order."""
    graph = require_fx_graph(model, "channel pruning")
    spaces, values, calls = _Spaces(), {}, {}
    for node in graph.nodes:
        values[node] = _visit(node, model, spaces, values, calls)
    shared = {name for name, count in calls.items() if count > 1}
    return [_group(model, spaces, root, shared) for root in _roots_with_producers(spaces)]


def _visit(node: torch.fx.Node, model: nn.Module, spaces: _Spaces, values: dict, calls: dict) -> _Value | None:
    inputs = [values[n] for n in node.all_input_nodes if values.get(n) is not None]
    if node.op == "placeholder":
        return _Value(spaces.new("model input"))
    if node.op == "output":
        for value in inputs:
            spaces.refuse(value.space, "model output")
        return None
    if node.op == "call_module":
        module = model.get_submodule(str(node.target))
        if any(True for _ in module.parameters(recurse=False)):
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
        return _visit_module(str(node.target), module, inputs, spaces)
    return _visit_function(node, inputs, spaces)


def _visit_module(name: str, module: nn.Module, inputs: list[_Value], spaces: _Spaces) -> _Value | None:
    if is_compressible(module) and len(inputs) == 1:
        return _visit_layer(name, module, inputs[0], spaces)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and len(inputs) == 1:
        spaces.add(inputs[0].space, name, "bn")
        return inputs[0]
    if isinstance(module, ZERO_MODULES) and len(inputs) == 1:
        return inputs[0]
    if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1 and len(inputs) == 1:
        return _Value(inputs[0].space, flat=True)
    return _unsupported(f"{name} ({type(module).__name__})", inputs, spaces)


def _visit_layer(name: str, layer: nn.Conv2d | nn.Linear, value: _Value, spaces: _Spaces) -> _Value:
    if isinstance(layer, nn.Conv2d) and layer.groups > 1:
        if layer.groups == layer.in_channels == layer.out_channels and not value.flat:
            spaces.add(value.space, name, "dw")
            return value
        return _unsupported(f"{name} (grouped conv, groups={layer.groups})", [value], spaces)
    spaces.add(value.space, name, "in", value.flat)
    output = spaces.new()
    spaces.add(output, name, "out")
    return _Value(output)


def _visit_function(node: torch.fx.Node, inputs: list[_Value], spaces: _Spaces) -> _Value | None:
    target = node.target
    if node.op == "get_attr":
        return _Value(spaces.new(f"constant tensor {target}"))
    if (node.op == "call_method" and target in SHAPE_METHODS) or (
            node.op == "call_function" and target is getattr and node.args[1] == "shape"):
        return None
    if _is_add(node) and len(inputs) == 2 and len(node.all_input_nodes) == 2:
        if inputs[0].flat != inputs[1].flat:
            return _unsupported("add of flattened and unflattened tensors", inputs, spaces)
        spaces.union(inputs[0].space, inputs[1].space)
        return inputs[0]
    zero_preserving = (node.op == "call_function" and target in ZERO_FUNCTIONS) or (
        node.op == "call_method" and target in ZERO_METHODS)
    if zero_preserving and len(inputs) == 1:
        return inputs[0]
    if _is_flatten(node) and len(inputs) == 1:
        return _Value(inputs[0].space, flat=True)
    return _unsupported(_op_name(node), inputs, spaces)


def _is_add(node: torch.fx.Node) -> bool:
    return (node.op == "call_function" and node.target in ADDS) or (
        node.op == "call_method" and node.target in ("add", "add_"))


def _is_flatten(node: torch.fx.Node) -> bool:
    """flatten(x, 1) (to the last dim): each channel becomes a block of consecutive features."""
    is_flatten = (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten")
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return is_flatten and start == 1 and end == -1


def _op_name(node: torch.fx.Node) -> str:
    target = node.target
    return str(target) if isinstance(target, str) else getattr(target, "__name__", str(target))


def _unsupported(op: str, inputs: list[_Value], spaces: _Spaces) -> _Value:
    """Refuse every group the op touches; its output is a fresh group no one can prune."""
    reason = f"{op} is not a channel-wise op mapping 0 to 0"
    for value in inputs:
        spaces.refuse(value.space, reason)
    return _Value(spaces.new(f"produced by {op}"))


def _roots_with_producers(spaces: _Spaces) -> list[int]:
    """Roots of the spaces some Conv2d/Linear produces, in graph order of their first member."""
    roots = {spaces.find(s) for s in range(len(spaces.parent))}
    with_producers = [r for r in roots if any(role == "out" for _, _, role, _ in spaces.members[r])]
    return sorted(with_producers, key=lambda r: min(order for order, *_ in spaces.members[r]))


def _group(model: nn.Module, spaces: _Spaces, root: int, shared: set[str]) -> ChannelGroup:
    raw = sorted(spaces.members[root])
    producer = next(module for _, module, role, _ in raw if role == "out")
    channels = out_width(model.get_submodule(producer))
    members = tuple(Member(m, role, _block(model.get_submodule(m), role, channels, flat)) for _, m, role, flat in raw)
    reasons = list(spaces.reasons[root])
    reasons += [f"{m.module} has no integer block of features per channel" for m in members if m.block == 0]
    reasons += [f"{m.module} is called more than once" for m in members if m.module in shared]
    reasons += [f"{m.module} has a persistent weight mask (remove_masks_ first)" for m in members
                if parametrize.is_parametrized(model.get_submodule(m.module))]
    reasons += [f"{m} does not have {channels} channels" for m in members
                if m.block and _width(model.get_submodule(m.module), m.role) != channels * m.block]
    return ChannelGroup(producer, channels, members, "; ".join(dict.fromkeys(reasons)) or None)


def _width(module: nn.Module, role: str) -> int:
    """The size of the module's axis that the role slices."""
    if role == "bn":
        return module.num_features
    if role == "in":
        return module.in_features if isinstance(module, nn.Linear) else module.in_channels
    return out_width(module)


def _block(module: nn.Module, role: str, channels: int, flat: bool) -> int:
    """Features per channel: H·W for a Linear after flatten, else 1; 0 if it does not divide."""
    if role != "in" or not isinstance(module, nn.Linear) or not flat:
        return 1
    return module.in_features // channels if module.in_features % channels == 0 else 0
