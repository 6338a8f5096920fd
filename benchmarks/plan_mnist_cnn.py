"""Planned bit widths vs uniform and random allocations on builtin:mnist-cnn (weights only,
post-training, no fine-tuning), side by side in one run; and how well the predicted loss
increase ranks the measured one.

One curvature pass (1,024 training digits). For each average-bit budget: the plan (integer
program on Ω), uniform bits, and 10 random allocations that meet the same budget exactly (the
same integer program with random objectives). Held-out accuracy on the 1,000 held-out digits.
Spearman correlation of predicted vs measured loss increase (on the calibration digits) over
every candidate plan of a sweep of budgets and the random allocations, for the trace-only Ω and
the hybrid max(Ω, measured single-layer ΔL).

``--method gptq`` prices and deploys what ``compress apply`` deploys by default: every plan (and
every random allocation) is applied by true-sequential GPTQ over the calibration digits, and the
planner's Ω is the reconstructed weight's (``compress/plan/reconstructed.py``), as in
``compress plan``. ``--method rtn`` (the default here) rounds to nearest on both sides.
``--pricing`` is ``PlanSpec.pricing`` (``auto``, the default, is ``absorbed`` on this model: each
reconstructed option priced after the layers behind it are re-fitted by apply's drift rule,
``compress/plan/absorbed.py``; ``isolated``: each layer alone on the float model).

Run: python benchmarks/plan_mnist_cnn.py [--method rtn|gptq] [--pricing auto|absorbed|isolated] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from compress.curvature.estimate import estimate_curvature
from compress.data.spec import load_data
from compress.jsonio import write_json
from compress.models.spec import build_model
from compress.pipeline.plan import plan_curvature_spec
from compress.plan.allocation import allocate
from compress.plan.make import PlanEvidence, PlanSpec, layer_options, make_plan, plannable_layers
from compress.plan.measured import SingleLayerLoss
from compress.plan.reconstructed import Reconstructions
from compress.plan.sensitivity import LayerOption
from compress.plan.settings import plan_settings
from compress.quant.apply import compress_weights_
from compress.reconstruct.sequential import reconstruct_model_
from compress.reconstruct.settings import reconstruct_settings

BITS = (2, 3, 4, 8, None)


def accuracy_and_loss(model, data) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(*data.inputs)
    return (float((logits.argmax(1) == data.targets).float().mean()),
            float(torch.nn.functional.cross_entropy(logits, data.targets)))


def deploy(base, options: dict[str, LayerOption], method: str, calibration) -> torch.nn.Module:
    """A copy of ``base`` with ``options`` applied: rounded to nearest, or GPTQ as apply runs it."""
    model = copy.deepcopy(base)
    if method == "rtn":
        return compress_weights_(model, options)
    settings = reconstruct_settings(*plan_settings(options))
    reconstruct_model_(model, settings, [b.inputs for b in calibration.batches(256)])
    return model


def measure(base, options: dict[str, LayerOption], heldout, calibration, method: str = "rtn") -> dict:
    model = deploy(base, options, method, calibration)
    accuracy, _ = accuracy_and_loss(model, heldout)
    _, loss = accuracy_and_loss(model, calibration)
    return {"accuracy": accuracy, "loss": loss}


def random_allocations(base, budget: float, count: int, seed: int) -> list[dict[str, LayerOption]]:
    """Allocations meeting avg_bits ≤ budget, chosen by random objectives."""
    layers = plannable_layers(base)
    names = list(layers)
    options = [LayerOption(b) for b in BITS]
    sizes = np.array([[layers[n].weight.numel() * (32 if o.bits is None else o.bits) for o in options] for n in names])
    total = sum(layers[n].weight.numel() for n in names)
    rng = np.random.default_rng(seed)
    allocations = []
    for _ in range(count):
        result = allocate(rng.random(sizes.shape), {"avg_bits": sizes / total}, {"avg_bits": budget})
        allocations.append({n: options[c] for n, c in zip(names, result.choices)})
    return allocations


def predicted(plan_for, allocation: dict[str, LayerOption]) -> float:
    """Σ of the plan's per-option predictions for an arbitrary allocation."""
    plan = plan_for(100.0)  # every option allowed: its `considered` table holds every prediction
    return sum(plan.layers[n].considered[o.label()] for n, o in allocation.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("rtn", "gptq"), default="rtn")
    parser.add_argument("--pricing", choices=("auto", "absorbed", "isolated"), default="auto")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    method = args.method
    base = build_model("builtin:mnist-cnn")
    calibration = load_data("builtin:mnist5k", "train", "train").subset(range(1024), "calibration")
    heldout = load_data("builtin:mnist5k", "heldout", "heldout")
    curvature = estimate_curvature(base, calibration, plan_curvature_spec(None, PlanSpec({}, bits=BITS)))  # as `compress plan`
    reference = measure(base, {}, heldout, calibration)
    names = list(plannable_layers(base))
    reconstruction = Reconstructions(base, list(calibration.batches(256))) if method == "gptq" else None
    measured = SingleLayerLoss(base, calibration, "ce", 256, reconstruction)  # every option measured: random plans use them
    measured.measure_all([(n, o) for n, opts in layer_options(base, PlanSpec({}, bits=BITS)).items() for o in opts])
    report = {"method": method, "fp32": reference, "budgets": {}, "spearman_predicted_vs_measured": {}, "pricing": {}}
    for kind, extra, verify in (("trace", None, 1), ("hybrid", measured, 1), ("hybrid_verified", measured, 8)):
        def plan_for(budget: float, extra=extra, verify=verify):
            return make_plan(base, curvature, PlanSpec(budgets={"avg_bits": budget}, bits=BITS, verify=verify,
                                                       pricing=args.pricing),
                             PlanEvidence(measure=extra, reconstruction=reconstruction))

        started = time.perf_counter()
        report["pricing"][kind] = {"pricing": plan_for(100.0).pricing, "seconds": time.perf_counter() - started}

        for budget in (3.0, 2.5):
            plan = plan_for(budget)
            planned = {n: LayerOption(layer.weight_bits) for n, layer in plan.layers.items()}
            report["budgets"].setdefault(str(budget), {})[f"plan_{kind}"] = {
                **measure(base, planned, heldout, calibration, method),
                "bits": {n: layer.weight_bits for n, layer in plan.layers.items()}}
        points = []  # (predicted Δloss, measured Δloss) over a sweep and random allocations
        for budget in (2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 5.0, 6.0):
            plan = plan_for(budget)
            allocation = {n: LayerOption(layer.weight_bits) for n, layer in plan.layers.items()}
            points.append((plan.predicted_delta_loss,
                           measure(base, allocation, heldout, calibration, method)["loss"] - reference["loss"]))
        for allocation in random_allocations(base, 3.0, 12, 1):
            points.append((predicted(plan_for, allocation),
                           measure(base, allocation, heldout, calibration, method)["loss"] - reference["loss"]))
        report["spearman_predicted_vs_measured"][kind] = float(spearmanr(*zip(*points)).statistic)
        report.setdefault("predicted_vs_measured_points", {})[kind] = [[float(p), float(m)] for p, m in points]
    for budget in (3.0, 2.5):
        row = report["budgets"][str(budget)]
        for bits in sorted({int(np.floor(budget)), int(np.ceil(budget))}):
            row[f"uniform_{bits}bit"] = measure(base, {n: LayerOption(bits) for n in names}, heldout, calibration,
                                                method)
        randoms = [measure(base, a, heldout, calibration, method) for a in random_allocations(base, budget, 10, 0)]
        row["random_best_accuracy"] = max(r["accuracy"] for r in randoms)
        row["random_median_accuracy"] = float(np.median([r["accuracy"] for r in randoms]))
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
