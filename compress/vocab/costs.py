"""Plain cost tables a backend measures and the planner consumes (the planner never imports a
backend): per (layer, variant) milliseconds, where the variant is what the backend runs for an
option (``latency_variant``); and ``PlanLatency``, the backend's measurement of whole plans as
deployed (latency ÷ FP32 latency per batch size)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from compress.vocab.options import LayerOption


def latency_variant(option: LayerOption) -> str:
    """What a backend runs for an option: ``fp32``, ``weight-only`` (float kernel, weights
    dequantized) or ``int8`` (weights ≤ 8 bits and an 8-bit input: the integer kernel), with
    ``+chS`` for removed output channels, ``+inS`` for removed input channels and ``+rR`` for a
    layer factorised at rank R (two nodes). Unstructured and 2:4 zeros run at dense speed (no sparse
    kernels, DESIGN §6), so they share the dense variant."""
    kind = "fp32" if option.bits is None else ("weight-only" if option.act_bits is None else "int8")
    if option.channel_sparsity() > 0:
        kind += f"+ch{option.channel_sparsity():g}"
    if option.input_sparsity > 0:
        kind += f"+in{option.input_sparsity:g}"
    if option.rank is not None:
        kind += f"+r{option.rank}"
    return kind


@dataclass(frozen=True)
class LatencyCosts:
    """Milliseconds per layer and variant on one backend (a plan's latency is the sum of its
    layers' isolated times)."""

    backend: str
    milliseconds: dict[str, dict[str, float]]  # layer -> variant -> ms

    def latency(self, name: str, option: LayerOption) -> float:
        return self.milliseconds[name][latency_variant(option)]


def signed_activations(backend: str | None) -> bool:
    """Whether a backend's int8 kernels are fed signed activations. ONNX Runtime CPU's fast x86
    kernels (MLAS) multiply uint8 activations by int8 weights: on builtin:mnist-cnn (stem float,
    other layers int8, batch 32, 1 thread) asymmetric uint8 activations ran at 1.40× FP32 and
    symmetric int8 ones at 0.65×. TensorRT (and no backend) takes symmetric int8."""
    return backend != "ort-cpu"


class PlanLatency(Protocol):
    """Whole-model latency of plans as the backend deploys them, relative to the float model.

    ``ratios(plans)`` exports each plan (one option per layer) as the exporter writes it and times
    all of them with the float model, alternating, at every size in ``batch_sizes``; it returns, per
    plan, {batch size: median latency ÷ median FP32 latency} (< 1: faster than float)."""

    backend: str
    batch_sizes: tuple[int, ...]

    def ratios(self, plans: list[dict[str, LayerOption]]) -> list[dict[int, float]]: ...
