"""Pruning patterns and ``LayerOption``: one way to compress one layer, as the planner offers it,
the plan records it and apply deploys it.

Low rank: ``rank`` (per group) replaces the layer by its rank-r factorisation (``compress.lowrank``),
whose two factors both take the option's weight bits; it excludes pruning and activation bits
(apply refuses masks on factors, and a factor's rank-r intermediate would need its own activation
quantizer the planner does not price).

Patterns: ``unstructured`` (any weights), ``2:4`` (2 of every 4 consecutive weights along the
reduction axis), ``channel`` (whole output channels: the coupled channel group the layer produces,
``groups.py``, is removed everywhere it is used).
"""

from __future__ import annotations

from dataclasses import dataclass

from compress.errors import ConfigError

PATTERNS = ("unstructured", "2:4", "channel")


@dataclass(frozen=True)
class LayerOption:
    """``bits=None`` keeps the weight float; ``sparsity`` is the pruned fraction (0.5 for 2:4; for
    ``channel`` the fraction of the layer's output channel group removed); ``act_bits`` quantizes
    the layer's input (None keeps it float). ``input_sparsity`` is the fraction of the channel group
    feeding the layer that its producer removes: not the layer's own choice, but it shrinks the
    layer's weight (input columns), so the planner prices it with the layer. ``rank``: None keeps
    the layer whole; an integer r ≥ 1 factorises it at rank r per group (both factors at ``bits``)."""

    bits: int | None
    sparsity: float = 0.0
    pattern: str = "unstructured"
    act_bits: int | None = None
    input_sparsity: float = 0.0
    rank: int | None = None

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ConfigError(f"pattern {self.pattern!r} is not allowed (allowed: {', '.join(PATTERNS)})")
        if not (0 <= self.sparsity < 1 and 0 <= self.input_sparsity < 1):
            raise ConfigError(f"sparsity {self.sparsity} / input_sparsity {self.input_sparsity} not in [0, 1)")
        if self.rank is not None:
            if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
                raise ConfigError(f"rank {self.rank!r} is not allowed (allowed: an integer >= 1 or None)")
            if self.sparsity or self.input_sparsity or self.pattern != "unstructured" or self.act_bits is not None:
                raise ConfigError(f"rank {self.rank} goes with weight bits only (no sparsity, pattern or act_bits)")

    def own_label(self) -> str:
        """The layer's own choice as the plan prints it and overrides name it: ``w4a8``, ``w8+s0.5``,
        ``w8+2:4``, ``fp32+ch0.25``, ``w8+r5`` (rank 5)."""
        bits = "fp32" if self.bits is None else f"w{self.bits}"
        if self.act_bits is not None:
            bits += f"a{self.act_bits}"
        if self.rank is not None:
            return f"{bits}+r{self.rank}"
        if self.pattern == "2:4":
            return f"{bits}+2:4"
        prefix = {"unstructured": "s", "channel": "ch"}[self.pattern]
        return bits if self.sparsity == 0 else f"{bits}+{prefix}{self.sparsity:g}"

    def label(self) -> str:
        """The own label, with ``@in-chS`` when the input channel group is pruned by S."""
        return self.own_label() + (f"@in-ch{self.input_sparsity:g}" if self.input_sparsity else "")

    def channel_sparsity(self) -> float:
        """The fraction of the output channel group removed (0 unless the pattern is ``channel``)."""
        return self.sparsity if self.pattern == "channel" else 0.0

    def mask_sparsity(self) -> float:
        """The fraction of the (remaining) weights zeroed by a mask: unstructured or 2:4."""
        return 0.0 if self.pattern == "channel" else (0.5 if self.pattern == "2:4" else self.sparsity)
