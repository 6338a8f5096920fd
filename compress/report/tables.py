"""The report's tables as strings, rendered alike to Markdown and HTML."""

from __future__ import annotations

from dataclasses import dataclass

from compress.report.inputs import ReportInputs, Variant
from compress.report.summary import baseline, latency_keys, size_reduction, speedup


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def report_tables(inputs: ReportInputs) -> list[Table]:
    tables = [variants_table(inputs)]
    if inputs.parity:
        tables.append(parity_table(inputs))
    if inputs.layers:
        tables.append(layers_table(inputs))
    if inputs.spectrum and inputs.spectrum.top_eigenvalues:
        label = f": {inputs.spectrum.label}" if inputs.spectrum.label else ""
        tables.append(Table(f"Top eigenvalues{label}", ("rank", "λ"),
                            tuple((str(i + 1), _num(x)) for i, x in enumerate(inputs.spectrum.top_eigenvalues))))
    if inputs.sharpness:
        tables.append(sharpness_table(inputs))
    return tables


def sharpness_table(inputs: ReportInputs) -> Table:
    """Each recorded fine-tuning sharpness beside its learning rate η and the largest stable λ_max
    at η (``SharpnessPoint.limit``), titled with what the sharpness is of."""
    rule = f" ({inputs.stability_rule})" if inputs.stability_rule else ""
    headers = ("step", "λ_max", "learning rate η", f"stability limit on λ_max at η{rule}", "λ_max / limit")
    rows = tuple((str(p.step), _num(p.lambda_max), _num(p.lr), _num(p.limit),
                  "—" if p.limit is None else f"{p.lambda_max / p.limit:.2f}") for p in inputs.sharpness)
    label = inputs.sharpness_label or "λ_max of the fine-tuning training loss"
    return Table(f"Sharpness during fine-tuning: {label}", headers, rows)


def variants_table(inputs: ReportInputs) -> Table:
    base = baseline(inputs)
    keys = latency_keys(inputs)
    graph = any(v.graph_bytes is not None for v in inputs.variants)
    files = any(v.checkpoint_bytes is not None for v in inputs.variants)
    headers = ("variant", "quality", "size (MB)", *(["+ ONNX graph (MB, predicted)"] if graph else []),
               *(["checkpoint on disk (MB)"] if files else []),
               *(f"{b} batch {n}: median / p90 ms" for b, n in keys))
    rows = []
    for variant in inputs.variants:
        reduction = size_reduction(variant, base)
        size = _num(variant.size_mb) + (f" ({reduction:.2f}× smaller)" if reduction and variant is not base else "")
        graph_mb = [] if not graph else [_num(None if variant.graph_bytes is None else variant.graph_bytes / 1e6)]
        files_mb = [] if not files else [_num(None if variant.checkpoint_bytes is None else variant.checkpoint_bytes / 1e6)]
        rows.append((variant.name, _quality(variant), size, *graph_mb, *files_mb,
                     *(_latency(variant, base, b, n) for b, n in keys)))
    return Table(f"Variants (baseline: {base.name if base else '—'})", headers, tuple(rows))


def parity_table(inputs: ReportInputs) -> Table:
    """Each export's agreement with the PyTorch model and its measured file size."""
    headers = ("target", "max error (steps)", "mean error (steps)", "top-1 agreement", "file bytes (weights + graph)")
    return Table("Export parity", headers, tuple(
        (p.target, _num(p.max_error_steps), _num(p.mean_error_steps), _pct(p.top1_agreement), _file_bytes(p))
        for p in inputs.parity))


def _file_bytes(parity) -> str:
    if parity.file_bytes is None:
        return "—"
    if parity.weight_bytes is None:
        return f"{parity.file_bytes:,}"
    return f"{parity.file_bytes:,} ({parity.weight_bytes:,} + {parity.file_bytes - parity.weight_bytes:,})"


def layers_table(inputs: ReportInputs) -> Table:
    """One row per layer; where the plan priced second-order reconstruction, the predicted Δloss of the
    chosen option rounded to nearest beside the one reconstructed (what GPTQ/SparseGPT bought)."""
    headers = ("layer", "trace ± stderr", "weight bits", "act bits", "sparsity", "predicted Δloss", "measured Δloss")
    rows = [(r.name, f"{_num(r.trace)} ± {_num(r.trace_stderr)}", _bits(r.weight_bits), _bits(r.act_bits),
             _pct(r.sparsity), _num(r.predicted_delta_loss), _num(r.measured_delta_loss)) for r in inputs.layers]
    if any(r.reconstructed_delta_loss is not None for r in inputs.layers):
        headers += ("predicted Δloss, rounded", "predicted Δloss, reconstructed")
        rows = [row + (_num(r.rounded_delta_loss), _num(r.reconstructed_delta_loss))
                for row, r in zip(rows, inputs.layers)]
    return Table("Per-layer plan", headers, tuple(rows))


def _quality(variant: Variant) -> str:
    if variant.value is None:
        return "—"
    return f"{variant.metric} {_pct(variant.value)}" if variant.metric == "accuracy" else \
        f"{variant.metric} {variant.value:.5f}"


def _latency(variant: Variant, base: Variant | None, backend: str, batch: int) -> str:
    timing = next((t for t in variant.latency if (t.backend, t.batch_size) == (backend, batch)), None)
    if timing is None:
        return "—"
    ratio = speedup(variant, base, backend, batch)
    faster = f" ({ratio:.2f}×)" if ratio is not None and variant is not base else ""
    return f"{timing.median_ms:.4g} / {timing.p90_ms:.4g}{faster}"


def _bits(bits: int | None) -> str:
    return "float" if bits is None else str(bits)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
