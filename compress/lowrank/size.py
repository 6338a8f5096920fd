"""Parameter counts of a layer and of its rank-r factorisation, and the ranks worth using.

A layer's weight is ``groups`` matrices of m×n (Linear: groups = 1, m = out_features,
n = in_features; Conv2d: m = out_channels/groups, n = in_channels/groups·kh·kw). Its rank-r
factorisation stores r·n + m·r weights per group, and saves parameters only when r·(m + n) < m·n,
i.e. r < m·n/(m + n) (DESIGN §9). The bias (m per group) is kept once, on the second factor.
"""

from __future__ import annotations

from compress.errors import ConfigError


def layer_params(m: int, n: int, groups: int = 1, bias: bool = False) -> int:
    """Parameters of the unfactorised layer: groups·m·n weights (+ groups·m bias)."""
    return groups * m * n + (groups * m if bias else 0)


def factorised_params(m: int, n: int, rank: int, groups: int = 1, bias: bool = False) -> int:
    """Parameters of the rank-``rank`` factorisation: groups·rank·(m + n) weights (+ groups·m bias)."""
    return groups * rank * (m + n) + (groups * m if bias else 0)


def max_useful_rank(m: int, n: int) -> int:
    """The largest r with r·(m + n) < m·n (0 when no rank saves parameters)."""
    return (m * n - 1) // (m + n)


def check_rank(m: int, n: int, rank: int, layer: str = "layer") -> None:
    """Raise a one-line ``ConfigError`` unless 1 ≤ rank ≤ max_useful_rank(m, n)."""
    limit = max_useful_rank(m, n)
    if limit < 1:
        raise ConfigError(f"{layer}: its {m}×{n} weight cannot be factorised into fewer parameters "
                          f"(rank 1 stores {m + n} weights per group, the layer {m * n}); leave it unfactorised")
    if rank < 1:
        raise ConfigError(f"{layer}: rank {rank} is not allowed (allowed: 1..{limit})")
    if rank >= min(m, n):
        raise ConfigError(f"{layer}: rank {rank} is not below min(m, n) = {min(m, n)} of its {m}×{n} weight, so "
                          f"nothing is truncated (allowed: 1..{limit})")
    if rank > limit:
        raise ConfigError(f"{layer}: rank {rank} of its {m}×{n} weight stores {rank * (m + n)} weights per group, "
                          f"not fewer than the layer's {m * n} (allowed: 1..{limit}, below m·n/(m+n))")


def rank_from_ratio(m: int, n: int, rank_ratio: float) -> int:
    """⌊rank_ratio · m·n/(m + n)⌋: the rank whose factors hold about ``rank_ratio`` of the layer's
    weights (0.8 removes about 20% of them)."""
    return int(rank_ratio * m * n / (m + n))
