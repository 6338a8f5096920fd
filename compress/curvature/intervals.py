"""95% intervals from few samples: a standard error s from m samples is reported as
s · t_{0.975, m−1} / z_{0.975}, so that the usual ±1.96·stderr bar is Student's t interval
(Student 1908) rather than the normal one, which under-covers with few probes or batches."""

from __future__ import annotations

Z95 = 1.959964


def student_scale(num_samples: int) -> float:
    """t_{0.975, m−1} / z_{0.975} for a mean of ``num_samples`` samples (1 for m < 2: no spread)."""
    from scipy.special import stdtrit

    return float(stdtrit(num_samples - 1, 0.975)) / Z95 if num_samples >= 2 else 1.0
