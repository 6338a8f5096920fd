"""The report's figures as PNG bytes (matplotlib, Agg backend): quality vs size and vs latency,
per-layer bits / sparsity / trace, rounding vs reconstruction per layer, the Hessian spectrum,
predicted vs measured loss change, and the sharpness history. A figure without data is left out."""

from __future__ import annotations

import io
from typing import Callable

from compress.report.inputs import ReportInputs
from compress.report.summary import latency_keys, measured_rows, median_ms, spearman


def report_figures(inputs: ReportInputs) -> list[tuple[str, bytes]]:
    """(title, PNG) for every figure the inputs have data for, in reading order."""
    import matplotlib

    matplotlib.use("Agg")
    makers: list[tuple[str, bool, Callable]] = [
        ("Quality vs size", any(v.value is not None and v.size_mb for v in inputs.variants), _quality_vs_size),
        ("Quality vs latency", any(v.value is not None and v.latency for v in inputs.variants), _quality_vs_latency),
        ("Per-layer plan", bool(inputs.layers), _layers),
        ("Hessian spectrum", bool(inputs.spectrum and (inputs.spectrum.grid or inputs.spectrum.top_eigenvalues)),
         _spectrum),
        ("What reconstruction bought", bool(_reconstructed_rows(inputs)), _rounded_vs_reconstructed),
        ("Predicted vs measured loss change", len(measured_rows(inputs)) >= 2, _predicted_vs_measured),
        ("Sharpness during fine-tuning", bool(inputs.sharpness), _sharpness),
    ]
    return [(title, _png(make, inputs)) for title, present, make in makers if present]


def _png(make: Callable, inputs: ReportInputs) -> bytes:
    import matplotlib.pyplot as plt

    figure = make(plt, inputs)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _quality_axis_label(inputs: ReportInputs) -> str:
    metrics = {v.metric for v in inputs.variants if v.value is not None}
    return "accuracy" if metrics == {"accuracy"} else " / ".join(sorted(metrics))


def _quality_vs_size(plt, inputs: ReportInputs):
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for variant in inputs.variants:
        if variant.value is not None and variant.size_mb:
            axis.scatter(variant.size_mb, variant.value, s=50)
            axis.annotate(variant.name, (variant.size_mb, variant.value), textcoords="offset points", xytext=(5, 5))
    axis.set_xlabel("size (MB)")
    axis.set_ylabel(_quality_axis_label(inputs))
    axis.set_title(f"{inputs.model}: quality vs size")
    axis.grid(alpha=0.3)
    return figure


def _quality_vs_latency(plt, inputs: ReportInputs):
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for backend, batch in latency_keys(inputs):
        points = [(median_ms(v, backend, batch), v.value, v.name) for v in inputs.variants if v.value is not None]
        points = [p for p in points if p[0] is not None]
        axis.plot([p[0] for p in points], [p[1] for p in points], "o", label=f"{backend}, batch {batch}")
        for x, y, name in points:
            axis.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axis.set_xlabel("median latency (ms)")
    axis.set_ylabel(_quality_axis_label(inputs))
    axis.set_title(f"{inputs.model}: quality vs latency")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return figure


def _layers(plt, inputs: ReportInputs):
    rows = inputs.layers
    names = [r.name for r in rows]
    positions = range(len(rows))
    figure, (bits_axis, sparsity_axis, trace_axis) = plt.subplots(1, 3, figsize=(12, 0.35 * len(rows) + 1.8),
                                                                   sharey=True)
    bits_axis.barh([p - 0.2 for p in positions], [r.weight_bits or 32 for r in rows], height=0.4, label="weights")
    bits_axis.barh([p + 0.2 for p in positions], [r.act_bits or 32 for r in rows], height=0.4, label="activations")
    bits_axis.set_xscale("log", base=2)
    bits_axis.set_xlabel("bits (32 = float)")
    bits_axis.legend(fontsize=8)
    sparsity_axis.barh(positions, [100 * r.sparsity for r in rows], color="tab:red")
    sparsity_axis.set_xlabel("sparsity (%)")
    sparsity_axis.set_xlim(0, 100)
    traces = [r.trace or 0.0 for r in rows]
    errors = [r.trace_stderr or 0.0 for r in rows]
    trace_axis.barh(positions, traces, xerr=errors, color="tab:green", ecolor="black", capsize=2)
    trace_axis.set_xlabel("Hessian trace (± stderr)")
    bits_axis.set_yticks(list(positions), names, fontsize=7 if len(rows) > 20 else 9)
    bits_axis.invert_yaxis()
    figure.suptitle(f"{inputs.model}: per-layer bits, sparsity and curvature")
    return figure


def _spectrum(plt, inputs: ReportInputs):
    spectrum = inputs.spectrum
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    if spectrum.grid:
        axis.semilogy(spectrum.grid, [max(d, 1e-8) for d in spectrum.density], label="density (smoothed SLQ)")
    for index, value in enumerate(spectrum.top_eigenvalues):
        axis.axvline(value, color="tab:red", linestyle="--", alpha=0.7, label="top eigenvalues" if index == 0 else None)
    axis.set_xlabel(_wrap(spectrum.label or "eigenvalue λ"), fontsize=8)
    axis.set_ylabel("density")
    axis.set_title(f"{inputs.model}: curvature spectrum")
    axis.legend(fontsize=8)
    return figure


def _predicted_vs_measured(plt, inputs: ReportInputs):
    rows = measured_rows(inputs)
    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    axis.scatter([r.predicted_delta_loss for r in rows], [r.measured_delta_loss for r in rows])
    for row in rows:
        axis.annotate(row.name, (row.predicted_delta_loss, row.measured_delta_loss), fontsize=7,
                      textcoords="offset points", xytext=(3, 3))
    if all(r.predicted_delta_loss > 0 and r.measured_delta_loss > 0 for r in rows):
        axis.set_xscale("log")
        axis.set_yscale("log")
    rho = spearman(inputs)
    axis.set_title(f"predicted vs measured Δloss (Spearman ρ = {'—' if rho is None else f'{rho:.3f}'}, "
                   f"{len(rows)} layers)")
    axis.set_xlabel("predicted Δloss")
    axis.set_ylabel("measured Δloss")
    axis.grid(alpha=0.3)
    return figure


def _reconstructed_rows(inputs: ReportInputs) -> list:
    return [r for r in inputs.layers if r.rounded_delta_loss is not None and r.reconstructed_delta_loss is not None]


def _rounded_vs_reconstructed(plt, inputs: ReportInputs):
    """Per layer, the predicted Δloss of its planned option rounded to nearest beside the same option
    reconstructed by GPTQ/SparseGPT (log scale when every value is positive)."""
    import numpy as np

    rows = _reconstructed_rows(inputs)
    positions = np.arange(len(rows))
    figure, axis = plt.subplots(figsize=(6.4, 0.35 * len(rows) + 1.6))
    axis.barh(positions - 0.2, [r.rounded_delta_loss for r in rows], height=0.4, label="rounded to nearest")
    axis.barh(positions + 0.2, [r.reconstructed_delta_loss for r in rows], height=0.4, label="reconstructed")
    axis.set_yticks(positions, [r.name for r in rows], fontsize=7)
    axis.invert_yaxis()
    if all(r.rounded_delta_loss > 0 and r.reconstructed_delta_loss > 0 for r in rows):
        axis.set_xscale("log")
    axis.set_xlabel("predicted Δloss of the planned option")
    axis.set_title(f"{inputs.model}: rounding vs second-order reconstruction")
    axis.legend(fontsize=8)
    return figure


def _sharpness(plt, inputs: ReportInputs):
    """λ_max per recorded step, and the stability limit its learning rate implies where recorded."""
    figure, axis = plt.subplots(figsize=(6.4, 4.6))
    axis.plot([p.step for p in inputs.sharpness], [p.lambda_max for p in inputs.sharpness], "o-", label="λ_max")
    limits = [(p.step, p.limit) for p in inputs.sharpness if p.limit is not None]
    if limits:
        rule = inputs.stability_rule or "stability limit at η"
        axis.plot([s for s, _ in limits], [v for _, v in limits], "r--", label=f"stability limit {rule}")
        axis.legend(fontsize=8)
    axis.set_xlabel("step")
    axis.set_ylabel("λ_max")
    axis.set_title(_wrap(inputs.sharpness_label or "λ_max of the fine-tuning training loss"), fontsize=8)
    axis.grid(alpha=0.3)
    return figure


def _wrap(text: str, width: int = 80) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
