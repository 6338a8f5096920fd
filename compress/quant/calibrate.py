"""Activation range calibrators (per tensor); observers accumulate over calibration batches.

- ``minmax``: [min x, max x] over every batch.
- ``percentile``: the p-th percentile of |x| (symmetric grids) or the (100−p)-th / p-th percentiles
  of x (asymmetric grids), from a histogram accumulated over batches.
- ``mse``: the clip c that minimises E[(x − Q_c(x))²] over the accumulated histogram, searched on a
  grid of candidate clips (the "MSE" calibrator of Wu et al. 2020, "Integer Quantization for Deep
  Learning Inference: Principles and Empirical Evaluation", §4.2).

Histograms span the running [min, max]; when a new batch widens it, the old counts are re-binned
onto the new edges (mass spread uniformly inside each old bin), as TensorRT's calibrators do.
"""

from __future__ import annotations

import torch

from compress.quant.weights import code_range

CALIBRATORS = ("minmax", "percentile", "mse")
NUM_BINS = 2048


class RangeObserver:
    """Accumulates min, max and a histogram of the values seen."""

    def __init__(self) -> None:
        self.low = float("inf")
        self.high = float("-inf")
        self.counts = torch.zeros(NUM_BINS, dtype=torch.float64)

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        low, high = min(self.low, float(x.min())), max(self.high, float(x.max()))
        if (low, high) != (self.low, self.high) and self.counts.sum() > 0:
            self.counts = _rebin(self.counts, self.low, self.high, low, high)
        self.low, self.high = low, high
        self.counts += torch.histc(x, NUM_BINS, low, high if high > low else low + 1.0)

    def centers(self) -> torch.Tensor:
        high = self.high if self.high > self.low else self.low + 1.0
        edges = torch.linspace(self.low, high, NUM_BINS + 1, dtype=torch.float64)
        return (edges[1:] + edges[:-1]) / 2


def _rebin(counts: torch.Tensor, old_low: float, old_high: float, low: float, high: float) -> torch.Tensor:
    """Move histogram mass from bins over [old_low, old_high] onto bins over [low, high]."""
    old_high = old_high if old_high > old_low else old_low + 1.0
    samples_per_bin = 16
    fractions = (torch.arange(samples_per_bin, dtype=torch.float64) + 0.5) / samples_per_bin
    width = (old_high - old_low) / NUM_BINS
    points = old_low + (torch.arange(NUM_BINS, dtype=torch.float64)[:, None] + fractions) * width
    weights = (counts[:, None] / samples_per_bin).expand_as(points)
    index = ((points - low) / (high - low) * NUM_BINS).long().clamp(0, NUM_BINS - 1)
    return torch.zeros(NUM_BINS, dtype=torch.float64).index_add_(0, index.flatten(), weights.flatten())


def calibrated_range(
    observer: RangeObserver, calibrator: str, signed: bool, percentile: float, bits: int
) -> tuple[float, float]:
    """The clipping range [low, high] (low ≤ 0 ≤ high) chosen by ``calibrator``."""
    if observer.low == float("inf"):
        raise ValueError("no calibration data reached this quantizer")
    if calibrator == "minmax":
        low, high = observer.low, observer.high
    elif calibrator == "percentile":
        low, high = _percentile_range(observer, signed, percentile)
    else:
        low, high = _mse_range(observer, signed, bits)
    if signed:
        bound = max(abs(low), abs(high))
        low, high = -bound, bound
    return min(low, 0.0), max(high, 0.0)


def _quantile(values: torch.Tensor, counts: torch.Tensor, q: float) -> float:
    """The value below which a fraction q of the histogram mass lies (bin-centre resolution)."""
    order = torch.argsort(values)
    cumulative = torch.cumsum(counts[order], 0) / counts.sum()
    position = int(torch.searchsorted(cumulative, torch.tensor(q, dtype=torch.float64)).clamp(max=len(order) - 1))
    return float(values[order][position])


def _percentile_range(observer: RangeObserver, signed: bool, percentile: float) -> tuple[float, float]:
    centers, counts = observer.centers(), observer.counts
    if signed:
        bound = _quantile(centers.abs(), counts, percentile / 100)
        return -bound, bound
    return _quantile(centers, counts, 1 - percentile / 100), _quantile(centers, counts, percentile / 100)


def _mse_range(observer: RangeObserver, signed: bool, bits: int) -> tuple[float, float]:
    """Scale the min-max range by the factor α ∈ (0, 1] minimising the histogram's quantization MSE."""
    centers, counts = observer.centers(), observer.counts
    best, best_error = 1.0, float("inf")
    for alpha in torch.linspace(0.05, 1.0, 96, dtype=torch.float64).tolist():
        low, high = min(observer.low * alpha, 0.0), max(observer.high * alpha, 0.0)
        if signed:
            bound = max(-low, high)
            low, high = -bound, bound
        scale, zero_point, qmin, qmax = grid(low, high, bits, signed)
        codes = torch.clamp(torch.round(centers / scale) + zero_point, qmin, qmax)
        error = float((counts * ((codes - zero_point) * scale - centers) ** 2).sum())
        if error < best_error:
            best, best_error = alpha, error
    return observer.low * best, observer.high * best


def grid(low: float, high: float, bits: int, signed: bool) -> tuple[float, int, int, int]:
    """(scale, zero point, q_min, q_max) of the integer grid covering [low, high] ∋ 0.

    Signed (symmetric, TensorRT): zero point 0, s = max(|low|, high) / (2^(b−1) − 1), codes in
    [−2^(b−1), 2^(b−1) − 1] (the saturation of ONNX QuantizeLinear). Unsigned (asymmetric):
    s = (high − low) / (2^b − 1), z = round(−low / s), codes in [0, 2^b − 1].
    """
    q_min, q_max = code_range(bits, signed)
    if signed:
        scale = max(-low, high) / q_max
        return (scale if scale > 0 else 1.0), 0, q_min, q_max
    scale = (high - low) / q_max
    scale = scale if scale > 0 else 1.0
    return scale, int(min(max(round(-low / scale), 0), q_max)), q_min, q_max
