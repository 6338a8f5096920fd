"""Plans with and without rank options on builtin:mnist-cnn: the size-vs-accuracy frontier at four
size budgets, post-training (no fine-tuning), side by side in one run; and the ORT CPU latency of
the factorised layers next to the whole ones.

One curvature pass and one set of planner measurements (1,024 training digits, hybrid sensitivity,
verification of the 8 least-Ω allocations, as ``compress plan`` does) serve both arms: candidate
weight bits 2, 3, 4, 8, fp32, and for the second arm also rank ratios 0.25, 0.5, 0.75 (Fisher-weighted
whitened factors, both at the option's bits). Each plan is written as a recipe, applied on the same 1,024
digits and evaluated on the 1,000 held-out digits. Every candidate's single-layer ΔL (the planner's
measurement: only that layer compressed as apply compresses it) is reported with its stored bits.
Latency: the planner's ORT latency table — every layer alone (followed by a ReLU), float, whole
(``fp32``) vs factorised at each offered rank (``fp32+rR``: two Conv/MatMul nodes), ONNX Runtime
with one thread, at batch 1 and 32.

Run: OMP_NUM_THREADS=1 python benchmarks/lowrank_plan_mnist_cnn.py [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from compress.apply.pipeline import ApplySpec, apply_
from compress.curvature.estimate import estimate_curvature
from compress.data.spec import load_data
from compress.errors import BudgetError
from compress.jsonio import write_json
from compress.models.spec import build_model
from compress.pipeline.plan import PlanMeasurements, default_curvature_spec, gather, plan_as_recipe, plan_spec
from compress.plan.make import layer_options, make_plan, plannable_layers
from compress.plan.ranks import offered_ranks
from compress.plan.channels import ChannelPlan
from compress.plan.size import size_model, tensor_bits
from compress.vocab.options import LayerOption

BITS = (2, 3, 4, 8, None)
RANKS = (0.25, 0.5, 0.75)
BUDGETS_MB = (0.012, 0.009, 0.0075, 0.0065, 0.0055)  # ≈ all-4-bit, all-3-bit, between, just above and
# below all-2-bit (0.0064 MB): the last is reachable only with rank options
CURVATURE_SECONDS = 120.0


def accuracy(model: nn.Module, data) -> float:
    with torch.no_grad():
        return float((model(*data.inputs).argmax(1) == data.targets).float().mean())


def applied(base: nn.Module, plan, calibration) -> nn.Module:
    """The plan's recipe applied as ``compress apply`` applies it (no fine-tuning)."""
    names = list(plannable_layers(base))
    recipe = plan_as_recipe(plan, "builtin:mnist-cnn", "builtin:mnist5k")
    spec = ApplySpec(recipe.quant_settings(names), recipe.prune_settings(names), lowrank=recipe.lowrank_settings(names))
    model = copy.deepcopy(base)
    apply_(model, spec, calibration, None, None, 128)
    return model.eval()


def frontier(base, calibration, heldout, curvature, evidence, how, ranks: tuple[float, ...]) -> list[dict]:
    rows = []
    for budget in BUDGETS_MB:
        spec = plan_spec({"size_mb": budget}, how, bits=BITS, ranks=ranks)
        try:
            plan = make_plan(base, curvature, spec, evidence)
        except BudgetError as error:
            rows.append({"budget_mb": budget, "infeasible": str(error)})
            continue
        model = applied(base, plan, calibration)
        rows.append({"budget_mb": budget, "size_mb": plan.totals["size_mb"], "accuracy": accuracy(model, heldout),
                     "predicted_delta_loss": plan.predicted_delta_loss,
                     "measured_delta_loss": min(r["measured_delta_loss"] for r in plan.verified),
                     "choices": {n: layer.option().label() for n, layer in plan.layers.items()}})
        print(json.dumps(rows[-1]))
    return rows


def single_layer_losses(base: nn.Module, evidence, spec) -> dict[str, list[dict]]:
    """Every candidate of every layer: stored bits and measured single-layer ΔL, smallest first."""
    options = layer_options(base, spec)
    sizes = size_model(base, list(options), ChannelPlan(base, {}, {}))
    evidence.measure.measure_all([(n, o) for n, opts in options.items() for o in opts])
    return {n: sorted(({"option": o.label(), "bits": sizes.layer_bits(n, o, True),
                        "single_layer_delta_loss": evidence.measure.cache[(n, o)]} for o in opts),
                      key=lambda row: row["bits"])
            for n, opts in options.items()}


def layer_latency(base: nn.Module, calibration) -> dict[str, dict[str, dict[str, float]]]:
    """The planner's ORT latency table (``compress.backends.ort.latency_table``, float variants:
    whole and factorised at each offered rank), median ms of each layer alone at batch 1 and 32."""
    from compress.backends.ort.latency_table import latency_table

    options = {n: [LayerOption(None, rank=r) for r in offered_ranks(layer, RANKS)]
               for n, layer in plannable_layers(base).items()}
    table: dict[str, dict[str, dict[str, float]]] = {}
    for batch in (1, 32):
        measured = latency_table(base, (calibration.inputs[0][:1],), options, batch_size=batch)
        for name, kinds in measured.median_ms.items():
            for kind, ms in kinds.items():
                table.setdefault(name, {}).setdefault(kind, {})[f"batch{batch}_ms"] = ms
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    base = build_model("builtin:mnist-cnn").eval()
    calibration = load_data("builtin:mnist5k", "train", "train").subset(range(1024), "calibration")
    heldout = load_data("builtin:mnist5k", "heldout", "heldout")
    curvature_spec = default_curvature_spec()
    curvature_spec = replace(curvature_spec, trace=replace(curvature_spec.trace, max_seconds=CURVATURE_SECONDS))
    curvature = estimate_curvature(base, calibration, curvature_spec)
    how = PlanMeasurements()
    every = plan_spec({"size_mb": 1.0}, how, bits=BITS, ranks=RANKS)
    evidence = gather(base, calibration, curvature, every, how)
    report = {"fp32": {"accuracy": accuracy(base, heldout), "size_mb": tensor_bits(base) / 8e6},
              "without_ranks": frontier(base, calibration, heldout, curvature, evidence, how, ()),
              "with_ranks": frontier(base, calibration, heldout, curvature, evidence, how, RANKS),
              "single_layer_delta_loss": single_layer_losses(base, evidence, every),
              "ort_layer_latency": layer_latency(base, calibration)}
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(Path(args.json), report)


if __name__ == "__main__":
    main()
