"""The one torch.fx tracer of the code base, with one failure policy.

``fx_graph(model)`` is the graph, or None when ``torch.fx.symbolic_trace`` cannot trace the model
(data-dependent control flow, unsupported Python): every caller then takes its documented
fallback (no residual ties, structural BN folding, input-only activation quantizers).
``require_fx_graph`` is for callers with no fallback: it raises ``InputError`` naming the purpose.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import InputError


def _trace(model: nn.Module) -> tuple[torch.fx.Graph | None, str]:
    try:
        return torch.fx.symbolic_trace(model).graph, ""
    except Exception as exc:  # noqa: BLE001 — tracing runs arbitrary user code; any failure = untraceable
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]


def fx_graph(model: nn.Module) -> torch.fx.Graph | None:
    """The model's torch.fx graph, or None when it cannot be traced."""
    return _trace(model)[0]


def require_fx_graph(model: nn.Module, purpose: str) -> torch.fx.Graph:
    """The model's torch.fx graph; ``InputError`` naming ``purpose`` when it cannot be traced."""
    graph, reason = _trace(model)
    if graph is None:
        raise InputError(f"{purpose} needs a torch.fx-traceable model: {reason}")
    return graph
