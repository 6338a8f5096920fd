"""Assemble ``ReportInputs`` from the files the other commands write: ``compress curvature
--json``, the plan YAML, ``compress eval --json`` per variant, the latency JSON
(``compress.backends.ort.latency.LatencyResult``), and optionally a fine-tuning result (sharpness
history), parity JSON per export target and measured per-layer loss changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from compress.errors import InputError
from compress.report.inputs import LayerRow, Latency, ParityFigures, ReportInputs, SharpnessPoint, Spectrum, Variant
from compress.report.labels import curvature_label, finetune_section, sharpness_label, stability_rule

GRID_POINTS = 400
SMOOTHING = 0.01  # Gaussian σ as a share of the spectrum's span


def load_report_inputs(model: str | None = None, curvature: str | Path | None = None, plan: str | Path | None = None,
                       evals: Mapping[str, str | Path] | None = None, latency: str | Path | None = None,
                       finetune: str | Path | None = None, parity: Mapping[str, str | Path] | None = None,
                       measured: str | Path | None = None) -> ReportInputs:
    """``evals`` and ``parity`` map a variant / export-target name to its file; a latency
    measurement belongs to the variant of the same name (variants only timed are listed too)."""
    return report_inputs(
        model,
        _read_json(curvature, "compress curvature --json") if curvature else None,
        _read_yaml(plan) if plan else None,
        {name: _read_json(path, "compress eval --json") for name, path in (evals or {}).items()},
        _read_json(latency, "the latency harness") if latency else None,
        _read_json(finetune, "fine-tuning") if finetune else None,
        {target: _read_json(path, "the ONNX exporter") for target, path in (parity or {}).items()},
        _read_json(measured, "measured loss changes") if measured else None,
    )


def report_inputs(model: str | None = None, curvature: dict | None = None, plan: dict | None = None,
                  evals: Mapping[str, dict] | None = None, latency: dict | None = None,
                  finetune: dict | None = None, parity: Mapping[str, dict] | None = None,
                  measured: dict | None = None) -> ReportInputs:
    """The same from results in memory, each as its ``to_dict()`` (the plan: the recipe mapping
    ``compress plan`` writes, with its ``plan:`` section)."""
    evals = dict(evals or {})
    if plan is not None and "plan" not in plan:
        raise InputError("the plan has no plan: section; give the recipe the planner wrote")
    recovery = finetune_section(plan)
    return ReportInputs(
        model=model if model is not None else _model_name(plan, evals),
        variants=_variants(evals, latency),
        layers=_layers(curvature, plan, measured or {}),
        spectrum=_spectrum(curvature) if curvature else None,
        sharpness=_sharpness(finetune) if finetune else (),
        parity=tuple(_parity(target, figures) for target, figures in (parity or {}).items()),
        sharpness_label=sharpness_label(recovery, None if plan is None else bool(plan.get("quantization")))
        if finetune else "",
        stability_rule=stability_rule(recovery) if finetune else "",
    )


def _read_json(path: str | Path, writer: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}; give the file {writer} wrote") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not JSON ({exc.msg} at line {exc.lineno}); give the file {writer} wrote") from exc


def _read_yaml(path: str | Path) -> dict:
    import yaml

    try:
        recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read plan {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"plan {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(recipe, dict) or "plan" not in recipe:
        raise InputError(f"{path} has no plan: section; give the YAML `compress plan` wrote")
    return recipe


def _field(payload: Any, key: str, source: str) -> Any:
    if not isinstance(payload, dict) or key not in payload:
        raise InputError(f"{source} has no {key!r}; is it the right file?")
    return payload[key]


def _model_name(plan: dict | None, evals: dict[str, dict]) -> str:
    if plan and isinstance(plan.get("model"), dict) and "spec" in plan["model"]:
        return str(plan["model"]["spec"])
    return next((str(e["model"]) for e in evals.values() if isinstance(e, dict) and "model" in e), "model")


def _variants(evals: dict[str, dict], latency: dict | None) -> tuple[Variant, ...]:
    timings: dict[str, list[Latency]] = {}
    for m in _field(latency, "measurements", "the latency JSON") if latency else []:
        timings.setdefault(m["model"], []).append(Latency(m["backend"], m["batch_size"], m["median_ms"], m["p90_ms"]))
    variants = []
    for name, result in evals.items():
        metric = _field(result, "metric", f"eval result {name}")
        variants.append(Variant(name, metric, float(_field(result, "value", f"eval result {name}")),
                                float(_field(result, "size_mb", f"eval result {name}")), tuple(timings.get(name, ())),
                                result.get("graph_bytes"), result.get("checkpoint_bytes")))
    variants += [Variant(name, "accuracy", None, None, tuple(times)) for name, times in timings.items()
                 if name not in evals]
    return tuple(variants)


def _layers(curvature: dict | None, plan: dict | None, measured: dict) -> tuple[LayerRow, ...]:
    traces = _field(curvature, "layers", "the curvature JSON") if curvature else {}
    why = _field(plan["plan"], "layers", "the plan: section") if plan else {}
    bits = ((plan or {}).get("quantization") or {}).get("layers") or {}
    pruning = ((plan or {}).get("pruning") or {}).get("layers") or {}
    rows = []
    for name in list(why) + [n for n in traces if n not in why]:
        source, chosen = why.get(name) or traces[name], why.get(name) or {}
        rows.append(LayerRow(
            name, source.get("trace"), source.get("trace_stderr"), (bits.get(name) or {}).get("weight_bits"),
            (bits.get(name) or {}).get("act_bits"), float((pruning.get(name) or {}).get("ratio", 0.0)),
            chosen.get("predicted_delta_loss"), measured.get(name), chosen.get("omega_first_order"),
            chosen.get("omega_reconstructed")))
    return tuple(rows)


def _spectrum(curvature: dict) -> Spectrum:
    """The SLQ nodes and weights smoothed by a Gaussian of σ = 1% of their span (Ghorbani et al.
    2019), on a grid 5% wider than the span; empty when the file has only top eigenvalues."""
    import numpy as np

    from compress.curvature.spectrum import SpectralDensity

    top = tuple(float(x) for x in curvature.get("top_eigenvalues", ()))
    label = curvature_label(curvature)
    nodes = np.asarray(curvature.get("density_nodes", ()), dtype=np.float64)
    if nodes.size == 0:
        return Spectrum((), (), top, label)
    density = SpectralDensity(nodes, np.asarray(curvature["density_weights"], dtype=np.float64))
    span = max(float(nodes.max() - nodes.min()), 1e-12)
    grid = np.linspace(nodes.min() - 0.05 * span, nodes.max() + 0.05 * span, GRID_POINTS)
    return Spectrum(tuple(grid.tolist()), tuple(density.smoothed(grid, SMOOTHING * span).tolist()), top, label)


def _sharpness(finetune: dict) -> tuple[SharpnessPoint, ...]:
    history = _field(finetune, "sharpness_history", "the fine-tuning result")
    return tuple(SharpnessPoint(int(p["step"]), float(p["sharpness"]), _optional(p.get("lr")),
                                _optional(p.get("stable_lr"))) for p in history)


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def _parity(target: str, figures: dict) -> ParityFigures:
    source = f"parity file for {target}"
    return ParityFigures(target, float(_field(figures, "max_error_steps", source)), figures.get("top1_agreement"),
                         figures.get("mean_error_steps"), figures.get("num_examples"), figures.get("file_bytes"),
                         figures.get("weight_bytes"))
