"""Plain cost tables a backend measures and the planner consumes (the planner never imports a
backend): per (layer, variant) milliseconds, where the variant is what the backend runs for an
option (``latency_variant``)."""

from __future__ import annotations

from dataclasses import dataclass

from compress.vocab.options import LayerOption


def latency_variant(option: LayerOption) -> str:
    """What a backend runs for an option: ``fp32``, ``weight-only`` (float kernel, weights
    dequantized) or ``int8`` (weights ≤ 8 bits and an 8-bit input: the integer kernel), with
    ``+chS`` for removed output channels and ``+inS`` for removed input channels. Unstructured and
    2:4 zeros run at dense speed (no sparse kernels, DESIGN §6), so they share the dense variant."""
    kind = "fp32" if option.bits is None else ("weight-only" if option.act_bits is None else "int8")
    if option.channel_sparsity() > 0:
        kind += f"+ch{option.channel_sparsity():g}"
    if option.input_sparsity > 0:
        kind += f"+in{option.input_sparsity:g}"
    return kind


@dataclass(frozen=True)
class LatencyCosts:
    """Milliseconds per layer and variant on one backend (a plan's latency is the sum of its
    layers' isolated times)."""

    backend: str
    milliseconds: dict[str, dict[str, float]]  # layer -> variant -> ms

    def latency(self, name: str, option: LayerOption) -> float:
        return self.milliseconds[name][latency_variant(option)]
