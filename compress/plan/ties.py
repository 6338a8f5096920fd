"""Layers whose activation precision must match: the producers of a residual add's inputs.

An int8 Add (TensorRT's fused residual, ONNX Runtime's QLinearAdd) needs both inputs quantized;
one float input leaves Q/DQ unfused around the add, which is slower than float (DESIGN §4). The
producer of an input is the nearest Conv / Linear reached walking back through parameter-free
ops and norms; producers of one add (and of adds chained through skips) form one tied group.
Weight bits are not tied: both backends run sub-8-bit codes as int8 kernels.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import nn

from compress.vocab.tracing import fx_graph

ADDS = (operator.add, operator.iadd, torch.add)


def residual_groups(model: nn.Module, layers: list[str]) -> list[tuple[str, ...]] | None:
    """Tied groups of layer names, or None when the model cannot be traced with torch.fx."""
    graph = fx_graph(model)
    if graph is None:  # untraceable: ties unknown, reported by the caller
        return None
    groups: list[set[str]] = []
    producers_of: dict[torch.fx.Node, frozenset[str]] = {}
    for node in graph.nodes:  # topological order: every input is resolved before its users
        producers_of[node] = _producers(node, set(layers), producers_of)
        if _is_add(node):
            producers = set().union(*(producers_of[arg] for arg in node.all_input_nodes))
            if len(producers) > 1:
                groups.append(producers)
    return [tuple(sorted(g)) for g in _merge(groups)]


def _is_add(node: torch.fx.Node) -> bool:
    return ((node.op == "call_function" and node.target in ADDS)
            or (node.op == "call_method" and node.target in ("add", "add_"))) and len(node.all_input_nodes) > 1


def _producers(node: torch.fx.Node, layers: set[str],
               producers_of: dict[torch.fx.Node, frozenset[str]]) -> frozenset[str]:
    """The nearest planned layers behind ``node`` (the node itself if it is one)."""
    if node.op == "call_module" and node.target in layers:
        return frozenset({str(node.target)})
    return frozenset().union(*(producers_of[parent] for parent in node.all_input_nodes))


def _merge(groups: list[set[str]]) -> list[set[str]]:
    merged: list[set[str]] = []
    for group in groups:
        overlapping = [m for m in merged if m & group]
        for m in overlapping:
            merged.remove(m)
            group = group | m
        merged.append(group)
    return merged


def tie_tables(groups: list[tuple[str, ...]], names: list[str], act_bits: np.ndarray) -> tuple[np.ndarray, ...]:
    """Equality tables (see ``allocation.py``) making every group's layers choose equal activation
    bits; ``act_bits[l, o]`` is option o's activation bits (0 for float)."""
    index = {name: row for row, name in enumerate(names)}
    tables = []
    for group in groups:
        for a, b in zip(group, group[1:]):
            table = np.zeros_like(act_bits)
            table[index[a]] = act_bits[index[a]]
            table[index[b]] = -act_bits[index[b]]
            tables.append(table)
    return tuple(tables)
