"""``compress demo``: the whole pipeline on builtin:mnist-cnn, each stage through its own command
so every intermediate file is the one a user would get:

curvature → plan (avg 4 weight bits, and a latency budget a quarter of the way from the fastest
mix of the measured per-layer ONNX Runtime table to all-float: int8 where ORT's integer kernels
are faster, float where they are not; the stem conv, one input channel, is pinned to float with
``--override``: ORT runs it 3–4× faster in float, and its dequantized weights would also stop ORT
pre-packing it, which the isolated per-layer table cannot see) → the plan plus a
``finetune:`` section (QAT + KD, lr from the sharpness) applied → export to ONNX Runtime (fused
int8, parity) → uniform INT8 and FP32 for comparison → latency side by side → report.
"""

from __future__ import annotations

from pathlib import Path

MODEL, DATA = "builtin:mnist-cnn", "builtin:mnist5k"
FINETUNE = {"mode": "qat+kd", "epochs": 2, "lr": "auto", "sharpness_every": 40, "checkpoint_every": 50}
LATENCY_BATCH, LATENCY_SLACK, PLAN_BITS = 32, 0.25, (2, 3, 4, 8, None)
INT8_RECIPE = {"version": 1, "model": {"spec": MODEL}, "data": {"calibration": DATA},
               "quantization": {"layers": {"default": {"weight_bits": 8, "act_bits": 8, "act_signed": False}}}}


def run_demo(work: Path, cli) -> Path:
    """Run every stage into ``work`` (``cli(*args)`` runs one compress command and raises on failure);
    returns the report's HTML path."""
    work.mkdir(parents=True, exist_ok=True)
    cli("curvature", MODEL, "--data", DATA, "--max-samples", "512", "--max-seconds", "120",
        "--json", str(work / "curvature.json"))
    cli("plan", MODEL, "--data", DATA, "--max-samples", "512", "--curvature", str(work / "curvature.json"),
        "--budget", "avg_bits=4", "--budget", f"latency_ms={_latency_budget_ms():.6f}",
        "--backend", "ort-cpu", "--latency-batch", str(LATENCY_BATCH), "--act-bits", "8,fp32",
        "--sparsities", "0,0.5", "--override", "stem.0=fp32", "-o", str(work / "plan.yaml"))
    _write_recipe(work / "plan.yaml", work / "recipe.yaml")
    _write_yaml(INT8_RECIPE, work / "int8.yaml")
    for name, recipe in (("plan", "recipe.yaml"), ("int8", "int8.yaml")):
        cli("apply", str(work / recipe), "-o", str(work / name), "--json", str(work / f"{name}.apply.json"))
        cli("eval", str(work / name), "--data", DATA, "--json", str(work / f"{name}.eval.json"))
        cli("export", str(work / name), "--target", "ort", "-o", str(work / f"{name}-ort"))
    cli("eval", MODEL, "--data", DATA, "--json", str(work / "fp32.eval.json"))
    _latency(work)
    _finetune_result(work / "plan.apply.json", work / "finetune.json")
    cli("report", "--curvature", str(work / "curvature.json"), "--plan", str(work / "plan.yaml"),
        "--eval", f"fp32={work / 'fp32.eval.json'}", "--eval", f"uniform int8={work / 'int8.eval.json'}",
        "--eval", f"plan={work / 'plan.eval.json'}", "--latency", str(work / "latency.json"),
        "--finetune", str(work / "finetune.json"), "--parity", f"ort={work / 'plan-ort' / 'model.parity.json'}",
        "--model", MODEL, "-o", str(work / "report"))
    return work / "report" / "report.html"


def _latency_budget_ms() -> float:
    """fastest + slack·(float − fastest), from Σ over layers of the per-layer table the plan command
    will use (measured here once and cached, so the plan reads the same table): always reachable."""
    from compress.data.spec import load_data
    from compress.models.spec import build_model
    from compress.backends.ort.latency_table import latency_table
    from compress.plan.make import PlanSpec, layer_options

    model = build_model(MODEL)
    spec = PlanSpec(budgets={}, bits=PLAN_BITS, sparsities=(0.0, 0.5), act_bits=(8, None))
    first = next(iter(load_data(DATA, None, "train").batches(1)))
    table = latency_table(model, first.inputs, layer_options(model, spec), LATENCY_BATCH)
    fastest = sum(min(times.values()) for times in table.median_ms.values())
    return fastest + LATENCY_SLACK * (sum(times["fp32"] for times in table.median_ms.values()) - fastest)


def _write_recipe(plan: Path, recipe: Path) -> None:
    """The plan with ORT's activations (uint8, fused everywhere), recovery and the ORT target."""
    import yaml

    payload = yaml.safe_load(plan.read_text())
    for rule in payload["quantization"]["layers"].values():
        if rule and rule.get("act_bits"):
            rule["act_signed"] = False
    payload.update(finetune=FINETUNE, export={"targets": ["ort"], "batch_sizes": [1, 32]})
    _write_yaml(payload, recipe)


def _write_yaml(payload: dict, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(payload, sort_keys=False))


def _latency(work: Path) -> None:
    """FP32, uniform INT8 and the plan on ONNX Runtime, timed round-robin in one run."""
    from compress.backends.ort.latency import LatencySpec, measure_latency
    from compress.export.onnx_qdq import float_onnx
    from compress.jsonio import write_json
    from compress.models.spec import build_model

    import torch

    fp32 = float_onnx(build_model(MODEL), (torch.zeros(1, 1, 28, 28),))
    models = {"fp32": fp32, "uniform int8": work / "int8-ort" / "model.onnx", "plan": work / "plan-ort" / "model.onnx"}
    result = measure_latency(models, LatencySpec(batch_sizes=(1, 32), runs=50))
    write_json(work / "latency.json", result.to_dict())


def _finetune_result(apply_json: Path, out: Path) -> None:
    import json

    from compress.jsonio import write_json

    write_json(out, json.loads(apply_json.read_text())["finetune"])
