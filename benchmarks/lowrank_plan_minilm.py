"""builtin:minilm, ranks chosen by the planner (``PlanSpec.ranks``), no fine-tuning: mean cosine to
the FP32 embeddings at 10, 20, 30 and 40% parameter reduction of the encoder's 36 linear layers.

The planner (``make_plan``) gets float rank options only (weight bits: fp32; rank ratios
0.025, 0.05, …, 0.975 of every layer's weights, Fisher-weighted whitened factors) and a ``size_mb`` budget equal to the
FP32 model less the reduction's share of the encoder's linear parameters (biases included, as in
``lowrank_minilm.py``); the pooler, which the mean-pooled embedding does not use, is held at fp32
by an override. Ω of each option: the exact layer output error of the factors on the calibration
statistics, each output row weighted by its share ρ_i = d_i/mean(d) of the output Fisher diagonal,
in loss units (Tr(H_L)/n)·E_ρ/h̄ (``compress/plan/ranks.py``), with the per-layer traces
of ``benchmarks/results/curvature_minilm.json`` (``compress curvature builtin:minilm --data
builtin:sentences``, self-distillation loss, the same 256 train sentences). Trace-only sensitivity
(no single-layer measurements). Apply: the plan's low-rank settings on the FP32 model with the same
statistics and Fisher diagonal; metric: mean cosine on the 64 held-out sentences.

Run: OMP_NUM_THREADS=1 python benchmarks/lowrank_plan_minilm.py [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.curvature.result import Curvature
from compress.data.spec import load_data
from compress.evaluation import evaluate
from compress.jsonio import write_json
from compress.lowrank.apply import apply_lowrank_
from compress.models.spec import build_model
from compress.plan.channels import ChannelPlan
from compress.plan.make import Plan, PlanEvidence, PlanSpec, make_plan, plannable_layers
from compress.plan.overrides import Override
from compress.plan.reconstructed import Reconstructions
from compress.plan.settings import lowrank_settings
from compress.plan.size import size_model
from compress.vocab.options import LayerOption

REDUCTIONS = (0.1, 0.2, 0.3, 0.4)
RATIOS = tuple(round(0.025 * k, 3) for k in range(1, 40))
BATCH = 32
CURVATURE = Path(__file__).parent / "results" / "curvature_minilm.json"


@dataclass
class Setup:
    """What every reduction shares: the FP32 model and its copy, the data, the curvature, the held
    layers, the float size, the encoder's linear parameters, the planner's statistics."""

    model: nn.Module
    reference: nn.Module
    train: object
    heldout: object
    curvature: Curvature
    held: tuple[Override, ...]
    float_bits: float
    linear: int
    reconstruction: Reconstructions


def setup() -> Setup:
    torch.set_num_threads(1)
    model = build_model("builtin:minilm").eval()
    train = load_data("builtin:sentences", None, "train")
    layers = plannable_layers(model)
    encoder = [n for n in layers if n.startswith("encoder.encoder.layer.")]
    sizes = size_model(model, list(layers), ChannelPlan(model, {}, {}))
    return Setup(model, copy.deepcopy(model), train, load_data("builtin:sentences", None, "heldout"),
                 Curvature.from_dict(json.loads(CURVATURE.read_text())),
                 tuple(Override(n, ("fp32",)) for n in layers if n not in encoder),
                 sizes.total_bits({n: LayerOption(None) for n in layers}),
                 sum(p.numel() for n in encoder for p in model.get_submodule(n).parameters()),
                 Reconstructions(model, list(train.batches(BATCH))))


def planned_model(found: Setup, reduction: float) -> tuple[nn.Module, Plan, dict]:
    """The planner's ranks at ``reduction`` of the encoder's linear parameters, applied to a copy."""
    budget = (found.float_bits - 32 * reduction * found.linear) / 8e6
    spec = PlanSpec({"size_mb": budget}, bits=(None,), ranks=RATIOS, overrides=found.held)
    plan = make_plan(found.model, found.curvature, spec, PlanEvidence(reconstruction=found.reconstruction))
    settings = lowrank_settings({n: layer.option() for n, layer in plan.layers.items()})
    compressed = copy.deepcopy(found.model)
    fisher = {n: found.reconstruction.factorised.output_fisher(n) for n in settings}
    records = apply_lowrank_(compressed, settings, found.reconstruction.stats, fisher).layers
    return compressed, plan, records


def run(reductions: tuple[float, ...] = REDUCTIONS) -> dict:
    found = setup()
    results = []
    for reduction in reductions:
        start = time.perf_counter()
        compressed, plan, records = planned_model(found, reduction)
        cosine = evaluate(compressed, "minilm-planned", found.heldout, found.reference, batch_size=BATCH).value
        removed = sum(r.params_before - r.params_after for r in records.values())
        results.append({"target_reduction": reduction, "reduction": removed / found.linear, "mean_cosine": cosine,
                        "size_mb": plan.totals["size_mb"], "budget_mb": plan.budgets["size_mb"],
                        "predicted_delta_loss": plan.predicted_delta_loss, "factorised_layers": len(records),
                        "ranks": {n: r.rank for n, r in records.items()}, "seconds": time.perf_counter() - start})
        print(f"{reduction:.0%}: reduction {removed / found.linear:.3f}, cosine {cosine:.4f}, "
              f"{len(records)} layers factorised, {results[-1]['seconds']:.0f} s", flush=True)
    return {"model": "builtin:minilm", "encoder_linear_params": found.linear, "ratios": RATIOS, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--reductions", default=",".join(map(str, REDUCTIONS)))
    args = parser.parse_args()
    report = run(tuple(float(r) for r in args.reductions.split(",")))
    if args.json:
        write_json(Path(args.json), report)


if __name__ == "__main__":
    main()
