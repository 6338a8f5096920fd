"""Figures derived from the inputs: the baseline variant, size and speed ratios against it, and
Spearman's rank correlation of predicted vs measured per-layer loss changes."""

from __future__ import annotations

from compress.report.inputs import LayerRow, ReportInputs, Variant

BASELINE_NAMES = ("fp32", "float", "baseline")


def baseline(inputs: ReportInputs) -> Variant | None:
    """The variant named fp32 / float / baseline, else the first one."""
    named = [v for v in inputs.variants if v.name.lower() in BASELINE_NAMES]
    return named[0] if named else (inputs.variants[0] if inputs.variants else None)


def latency_keys(inputs: ReportInputs) -> list[tuple[str, int]]:
    """Every (backend, batch size) measured, in a stable order."""
    return sorted({(t.backend, t.batch_size) for v in inputs.variants for t in v.latency})


def median_ms(variant: Variant, backend: str, batch_size: int) -> float | None:
    return next((t.median_ms for t in variant.latency if (t.backend, t.batch_size) == (backend, batch_size)), None)


def size_reduction(variant: Variant, base: Variant | None) -> float | None:
    """base size / variant size (× smaller)."""
    if base is None or not base.size_mb or not variant.size_mb:
        return None
    return base.size_mb / variant.size_mb


def speedup(variant: Variant, base: Variant | None, backend: str, batch_size: int) -> float | None:
    """base median latency / variant median latency."""
    if base is None:
        return None
    mine, theirs = median_ms(variant, backend, batch_size), median_ms(base, backend, batch_size)
    return theirs / mine if mine and theirs else None


def measured_rows(inputs: ReportInputs) -> list[LayerRow]:
    return [row for row in inputs.layers if row.predicted_delta_loss is not None
            and row.measured_delta_loss is not None]


def spearman(inputs: ReportInputs) -> float | None:
    """Spearman's ρ of predicted vs measured Δloss over layers having both (None below 3)."""
    rows = measured_rows(inputs)
    if len(rows) < 3:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr([r.predicted_delta_loss for r in rows], [r.measured_delta_loss for r in rows]).statistic
    return None if rho != rho else float(rho)  # NaN when one side is constant


def summary(inputs: ReportInputs) -> dict[str, object]:
    base = baseline(inputs)
    return {
        "baseline": base.name if base else None,
        "size_reduction": {v.name: size_reduction(v, base) for v in inputs.variants},
        "speedup": {v.name: {f"{backend}@{batch}": speedup(v, base, backend, batch)
                             for backend, batch in latency_keys(inputs)} for v in inputs.variants},
        "spearman_predicted_vs_measured": spearman(inputs),
    }
