"""Per-layer low-rank settings (input), validated on construction like ``QuantSettings``."""

from __future__ import annotations

from dataclasses import dataclass

from compress.errors import ConfigError
from compress.lowrank.size import check_rank, max_useful_rank, rank_from_ratio

METHODS = ("svd", "whitened", "fisher", "fisher_whitened")
WHITENED = ("whitened", "fisher_whitened")  # need the layer's input statistics H
FISHER = ("fisher", "fisher_whitened")  # need the output-side Fisher diagonal
RANK_CHOICE = ("rank", "rank_ratio")  # exactly one of them is set
METRICS = {  # what each method's predicted error measures (see ``factorize.py``)
    "svd": "weight", "whitened": "output", "fisher": "fisher_weight", "fisher_whitened": "fisher_output",
}


@dataclass(frozen=True)
class LowRankSettings:
    """How one Conv2d/Linear layer is factorised.

    Exactly one of ``rank`` (an integer, per group for grouped convs) and ``rank_ratio`` (0 < ratio
    < 1: the rank ⌊ratio·m·n/(m+n)⌋ whose factors hold about that fraction of the layer's weights,
    so 0.8 removes about 20% of them). ``method``: ``svd`` (plain truncated SVD of W), ``whitened``
    (SVD-LLM: SVD of W·S, S the Cholesky factor of the damped input statistics H), ``fisher``
    (FWSVD: rows weighted by the output-side Fisher diagonal) or ``fisher_whitened`` (both: the
    Kronecker-factored quadratic with a diagonal output factor). ``damping``: added to the diagonal
    of H (and of the Fisher diagonal) as a fraction of its mean, as GPTQ damps (DESIGN §8).
    ``input_drift`` (whitened methods only): factorise true-sequentially, each layer's statistics
    taken on the inputs the already factorised earlier layers produce, and fit the factors to the
    float model's output on the float model's own input (``drift.py``) instead of to the layer's
    own weight on the float model's statistics. ``drift_ridge``: the relative ridge of that fit
    (λ / mean(diag H̃), pulling the target toward the layer's own weight), or None to choose it by
    generalised cross-validation per layer, as GPTQ's drift correction does.
    """

    rank: int | None = None
    rank_ratio: float | None = None
    method: str = "whitened"
    damping: float = 0.01
    input_drift: bool = False
    drift_ridge: float | None = None

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.rank_ratio is None):
            raise ConfigError("low-rank settings need exactly one of rank and rank_ratio")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise ConfigError(f"rank {self.rank!r} is not allowed (allowed: an integer >= 1)")
        if self.rank_ratio is not None and not 0 < self.rank_ratio < 1:
            raise ConfigError(f"rank_ratio {self.rank_ratio!r} is not allowed (allowed: 0 < rank_ratio < 1)")
        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r} is not allowed (allowed: {', '.join(METHODS)})")
        if not 0 <= self.damping < 1:
            raise ConfigError(f"damping {self.damping!r} is not allowed (allowed: 0 <= damping < 1)")
        if self.input_drift and self.method not in WHITENED:
            raise ConfigError(f"input_drift is not allowed with method {self.method} "
                              f"(allowed: method {' or '.join(WHITENED)}, or input_drift false)")
        if self.drift_ridge is not None and not (isinstance(self.drift_ridge, (int, float))
                                                 and not isinstance(self.drift_ridge, bool) and self.drift_ridge >= 0):
            raise ConfigError(f"drift_ridge {self.drift_ridge!r} is not allowed (allowed: null or a number >= 0)")
        if self.drift_ridge is not None and not self.input_drift:
            raise ConfigError("drift_ridge is not allowed without input_drift (allowed: null, or input_drift true)")

    def rank_for(self, m: int, n: int, layer: str = "layer") -> int:
        """The rank for an m×n weight (per group), checked against the size rule (``ConfigError``)."""
        rank = self.rank if self.rank is not None else rank_from_ratio(m, n, self.rank_ratio)
        if rank < 1 <= max_useful_rank(m, n):
            raise ConfigError(f"{layer}: rank_ratio {self.rank_ratio} gives rank 0 for its {m}×{n} weight "
                              f"(allowed: rank_ratio >= {(m + n) / (m * n):.3g})")
        check_rank(m, n, rank, layer)
        return rank
