"""``compress demo``: the whole pipeline on builtin:mnist-cnn, composed from the pipeline verbs,
writing every intermediate file a user of the CLI would get:

curvature → plan (avg 4 weight bits, and a latency budget a quarter of the way from the fastest
mix of the measured per-layer ONNX Runtime table to all-float: int8 where ORT's integer kernels
are faster, float where they are not; the stem conv, one input channel, is pinned to float by an
override: ORT runs it 3–4× faster in float, and its dequantized weights would also stop ORT
pre-packing it, which the isolated per-layer table cannot see) → the plan plus a ``finetune:``
section (QAT + KD, lr from the sharpness) applied → export to ONNX Runtime (fused int8, parity) →
uniform INT8 and FP32 for comparison → latency side by side → report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from compress.atomic import write_text

MODEL, DATA = "builtin:mnist-cnn", "builtin:mnist5k"
FINETUNE = {"mode": "qat+kd", "epochs": 2, "lr": "auto", "sharpness_every": 40, "checkpoint_every": 50}
LATENCY_BATCH, LATENCY_SLACK, PLAN_BITS = 32, 0.25, (2, 3, 4, 8, None)
SAMPLES, CURVATURE_SECONDS = 512, 120.0
INT8_RECIPE = {"version": 1, "model": {"spec": MODEL}, "data": {"calibration": DATA},
               "quantization": {"layers": {"default": {"weight_bits": 8, "act_bits": 8, "act_signed": False}}}}


def run_demo(work: Path, announce: Callable[[str], None] = print) -> Path:
    """Run every stage into ``work`` (``announce`` is told each stage as it starts); returns the
    report's HTML path."""
    from compress.checkpoint.format import read_info
    from compress.jsonio import write_json
    from compress.pipeline.apply import apply_to_checkpoint
    from compress.pipeline.evaluate import evaluate_model
    from compress.pipeline.export import export_checkpoint
    from compress.pipeline.report import report_from_files

    work.mkdir(parents=True, exist_ok=True)
    announce("curvature")
    model, data, curvature = _curvature()
    write_json(work / "curvature.json", curvature.to_dict())
    announce("plan")
    _plan(model, data, curvature, work / "plan.yaml")
    _write_recipe(work / "plan.yaml", work / "recipe.yaml")
    _write_yaml(INT8_RECIPE, work / "int8.yaml")
    for name, recipe in (("plan", "recipe.yaml"), ("int8", "int8.yaml")):
        announce(f"apply {recipe}")
        apply_to_checkpoint(str(work / recipe), work / name)
        write_json(work / f"{name}.apply.json", read_info(work / name).to_dict())
        announce(f"eval {name}")
        write_json(work / f"{name}.eval.json", evaluate_model(str(work / name), DATA).to_dict())
        announce(f"export {name} (ort)")
        export_checkpoint(work / name, work / f"{name}-ort", "ort")
    announce("eval fp32")
    write_json(work / "fp32.eval.json", evaluate_model(MODEL, DATA).to_dict())
    announce("latency")
    _latency(work)
    _finetune_result(work / "plan.apply.json", work / "finetune.json")
    announce("report")
    report = report_from_files(
        work / "report", MODEL, str(work / "curvature.json"), str(work / "plan.yaml"),
        {"fp32": str(work / "fp32.eval.json"), "uniform int8": str(work / "int8.eval.json"),
         "plan": str(work / "plan.eval.json")}, str(work / "latency.json"), str(work / "finetune.json"),
        {"ort": str(work / "plan-ort" / "model.parity.json")})
    return report.paths.html


def _curvature():
    from compress.curvature.estimate import CurvatureSpec
    from compress.curvature.trace import TraceSpec
    from compress.pipeline.curvature import measure_curvature

    return measure_curvature(MODEL, DATA, CurvatureSpec(max_samples=SAMPLES, trace=TraceSpec(max_seconds=CURVATURE_SECONDS)))


def _plan(model, data, curvature, out: Path) -> None:
    """Avg 4 weight bits and the latency budget, int8 or float activations, sparsity 0 or 0.5."""
    from dataclasses import replace

    from compress.pipeline.plan import PlanMeasurements, gather, plan_as_recipe, plan_spec, save_recipe, solve
    from compress.plan.overrides import parse_override

    spec = plan_spec({"avg_bits": 4.0}, bits=PLAN_BITS, sparsities=(0.0, 0.5), act_bits=(8, None),
                     overrides=(parse_override("stem.0=fp32"),))
    evidence = gather(model, data, curvature, spec, PlanMeasurements(backend="ort-cpu", latency_batch=LATENCY_BATCH))
    budget = _latency_budget_ms(evidence.latency)
    plan = solve(model, curvature, replace(spec, budgets={**spec.budgets, "latency_ms": budget}), evidence)
    save_recipe(plan_as_recipe(plan, MODEL, DATA), out, f"compress demo plan: {MODEL} on {DATA}, "
                f"avg_bits=4, latency_ms={budget:.6f}")


def _latency_budget_ms(table) -> float:
    """fastest + slack·(float − fastest), from Σ over layers of the per-layer table the plan uses:
    always reachable."""
    fastest = sum(min(times.values()) for times in table.milliseconds.values())
    return fastest + LATENCY_SLACK * (sum(times["fp32"] for times in table.milliseconds.values()) - fastest)


def _write_recipe(plan: Path, recipe: Path) -> None:
    """The plan (planned for ort-cpu, so its int8 activations are already uint8) with recovery and
    the ORT target."""
    import yaml

    payload = yaml.safe_load(plan.read_text())
    payload.update(finetune=FINETUNE, export={"targets": ["ort"], "batch_sizes": [1, 32]})
    _write_yaml(payload, recipe)


def _write_yaml(payload: dict, path: Path) -> None:
    import yaml

    write_text(path, yaml.safe_dump(payload, sort_keys=False))


def _latency(work: Path) -> None:
    """FP32, uniform INT8 and the plan on ONNX Runtime, timed round-robin in one run."""
    import torch

    from compress.backends.ort.latency import LatencySpec, measure_latency
    from compress.export.onnx_qdq import float_onnx
    from compress.jsonio import write_json
    from compress.models.spec import build_model

    fp32 = float_onnx(build_model(MODEL), (torch.zeros(1, 1, 28, 28),))
    models = {"fp32": fp32, "uniform int8": work / "int8-ort" / "model.onnx", "plan": work / "plan-ort" / "model.onnx"}
    result = measure_latency(models, LatencySpec(batch_sizes=(1, 32), runs=50))
    write_json(work / "latency.json", result.to_dict())


def _finetune_result(apply_json: Path, out: Path) -> None:
    import json

    from compress.jsonio import write_json

    write_json(out, json.loads(apply_json.read_text())["finetune"])
