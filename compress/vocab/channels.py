"""The kept-channel rule, defined once: how many of C channels survive pruning a fraction ``ratio``.

    keep = round_to · ⌊(1 − ratio)·C / round_to + ½⌋, clipped to [min(round_to, C), C], at least 1

(nearest multiple of ``round_to``; 1 when None). The planner prices, and apply removes, exactly
this many channels of a group (DESIGN §3, §6: round pruned widths to multiples of 8 or 16 on ORT).
"""

from __future__ import annotations


def kept_width(channels: int, ratio: float, round_to: int | None = None) -> int:
    """Channels kept of ``channels`` when the fraction ``ratio`` is pruned."""
    step = round_to or 1
    keep = step * int((1 - ratio) * channels / step + 0.5)
    return max(1, min(channels, max(step, keep)))
