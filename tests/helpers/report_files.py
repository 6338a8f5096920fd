"""Stage files for the report tests, each written from that stage's own result type."""

from __future__ import annotations

import json
from pathlib import Path

from compress.curvature.result import Curvature, LayerCurvature
from compress.evaluation import EvalResult
from compress.backends.ort.latency import LatencyMeasurement, LatencyResult, LatencySpec
from compress.finetune.spec import FinetuneResult, SharpnessPoint
from compress.plan.make import LayerPlan, Plan
from compress.plan.recipe import plan_recipe, write_recipe
from compress.report.inputs import ReportInputs
from compress.report.load import load_report_inputs


LAYERS = ("stem", "conv", "block.dw", "head")
TRACES = (40.0, 12.0, 3.0, 1.5)
PREDICTED = (0.004, 0.012, 0.001, 0.02)
MEASURED = (0.005, 0.008, 0.002, 0.03)  # same ranks as PREDICTED: Spearman ρ = 1
ROUNDED = (0.01, 0.03, None, 0.5)  # Ω rounded to nearest; the reconstructed Ω is PREDICTED (block.dw: float)


def write_stage_files(folder: Path) -> dict[str, Path]:
    """One file per stage, each written from that stage's own result type."""
    curvature = Curvature({n: LayerCurvature(t, 0.05 * t, 100, 64) for n, t in zip(LAYERS, TRACES)}, sum(TRACES),
                          1.0, [55.0, 21.0], 500, 3.0, "cross_entropy", 0.1, "xtrace", True,
                          density_nodes=[0.0, 0.5, 21.0, 55.0], density_weights=[0.7, 0.2, 0.06, 0.04])
    layers = {n: LayerPlan(b, s, "unstructured", t, 0.05 * t, 100, p, 100.0 * (b or 32), omega_first_order=r,
                           omega_reconstructed=None if r is None else p)
              for n, t, p, b, s, r in zip(LAYERS, TRACES, PREDICTED, (8, 4, None, 2), (0.0, 0.5, 0.0, 0.0), ROUNDED)}
    plan = Plan(layers, {"avg_bits": 4.0}, {"avg_bits": 3.9}, sum(PREDICTED))
    evals = {"fp32": EvalResult("builtin:mnist-cnn", "builtin:mnist5k", 1000, "accuracy", 0.982, 25000, 0.100, 1.0),
             "plan": EvalResult("plan", "builtin:mnist5k", 1000, "accuracy", 0.975, 25000, 0.025, 1.0)}
    latency = LatencyResult(tuple(LatencyMeasurement(m, "ort-cpu", b, 30, med, 1.2 * med, 0.9 * med)
                                  for m, b, med in [("fp32", 1, 0.5), ("plan", 1, 0.4), ("fp32", 8, 2.0),
                                                    ("plan", 8, 1.0), ("uniform int8", 1, 0.45)]),
                            LatencySpec(batch_sizes=(1, 8)), "1.32", 1.0)
    finetune = FinetuneResult(steps=100, epochs_run=1.0, lr=0.01, lr_source="auto", initial_sharpness=30.0,
                              sharpness_history=(SharpnessPoint(0, 30.0, 0.01, 0.06),
                                                 SharpnessPoint(50, 25.0, 0.01, 0.08)),
                              losses=(0.3, 0.2), resumed_from_step=None, world_size=1, seconds=5.0,
                              sharpness_seconds=1.0)
    paths = {name: folder / f"{name}.json" for name in ("curvature", "fp32", "plan_eval", "latency", "finetune",
                                                         "parity", "measured")}
    for name, payload in [("curvature", curvature.to_dict()), ("fp32", evals["fp32"].to_dict()),
                          ("plan_eval", evals["plan"].to_dict()), ("latency", latency.to_dict()),
                          ("finetune", finetune.to_dict()), ("measured", dict(zip(LAYERS, MEASURED))),
                          ("parity", {"max_error_steps": 1.0, "mean_error_steps": 0.1, "output_step": 0.05,
                                      "step_source": "out_scale", "top1_agreement": 0.999, "num_examples": 1000,
                                      "file_bytes": 19000, "weight_bytes": 12000})]:
        paths[name].write_text(json.dumps(payload))
    paths["plan_yaml"] = folder / "plan.yaml"
    write_recipe(plan_recipe(plan, "builtin:mnist-cnn", "builtin:mnist5k", None), paths["plan_yaml"], "plan", False)
    return paths


def load(paths: dict[str, Path]) -> ReportInputs:
    return load_report_inputs(None, paths["curvature"], paths["plan_yaml"],
                              {"fp32": paths["fp32"], "plan": paths["plan_eval"]}, paths["latency"],
                              paths["finetune"], {"ort": paths["parity"]}, paths["measured"])
