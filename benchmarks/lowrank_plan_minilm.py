"""builtin:minilm, ranks chosen by the planner (``PlanSpec.ranks``), no fine-tuning: mean cosine to
the FP32 embeddings at 10, 20, 30 and 40% parameter reduction of the encoder's 36 linear layers.

The planner (``make_plan``) gets float rank options only (weight bits: fp32; rank ratios
0.05, 0.10, …, 0.95 of every layer's weights, whitened factors) and a ``size_mb`` budget equal to the
FP32 model less the reduction's share of the encoder's linear parameters (biases included, as in
``lowrank_minilm.py``); the pooler, which the mean-pooled embedding does not use, is held at fp32
by an override. Ω of each option: the exact layer output error of the factors on the calibration
statistics in loss units, (Tr(H_L)/n)·E/h̄ (``compress/plan/ranks.py``), with the per-layer traces
of ``benchmarks/results/curvature_minilm.json`` (``compress curvature builtin:minilm --data
builtin:sentences``, self-distillation loss, the same 256 train sentences). Trace-only sensitivity
(no single-layer measurements). Apply: the plan's low-rank settings on the FP32 model with the same
statistics; metric: mean cosine on the 64 held-out sentences.

Run: OMP_NUM_THREADS=1 python benchmarks/lowrank_plan_minilm.py [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from compress.curvature.result import Curvature
from compress.data.spec import load_data
from compress.evaluation import evaluate
from compress.jsonio import write_json
from compress.lowrank.apply import apply_lowrank_
from compress.models.spec import build_model
from compress.plan.channels import ChannelPlan
from compress.plan.make import PlanEvidence, PlanSpec, make_plan, plannable_layers
from compress.plan.overrides import Override
from compress.plan.reconstructed import Reconstructions
from compress.plan.settings import lowrank_settings
from compress.plan.size import size_model
from compress.vocab.options import LayerOption

REDUCTIONS = (0.1, 0.2, 0.3, 0.4)
RATIOS = tuple(round(0.025 * k, 3) for k in range(1, 40))
BATCH = 32
CURVATURE = Path(__file__).parent / "results" / "curvature_minilm.json"


def run() -> dict:
    torch.set_num_threads(1)
    model = build_model("builtin:minilm").eval()
    reference = copy.deepcopy(model)
    train = load_data("builtin:sentences", None, "train")
    heldout = load_data("builtin:sentences", None, "heldout")
    curvature = Curvature.from_dict(json.loads(CURVATURE.read_text()))
    layers = plannable_layers(model)
    encoder = [n for n in layers if n.startswith("encoder.encoder.layer.")]
    held = tuple(Override(n, ("fp32",)) for n in layers if n not in encoder)
    sizes = size_model(model, list(layers), ChannelPlan(model, {}, {}))
    float_bits = sizes.total_bits({n: LayerOption(None) for n in layers})
    linear = sum(p.numel() for n in encoder for p in model.get_submodule(n).parameters())
    reconstruction = Reconstructions(model, list(train.batches(BATCH)))
    results = []
    for reduction in REDUCTIONS:
        start = time.perf_counter()
        budget = (float_bits - 32 * reduction * linear) / 8e6
        spec = PlanSpec({"size_mb": budget}, bits=(None,), ranks=RATIOS, overrides=held)
        plan = make_plan(model, curvature, spec, PlanEvidence(reconstruction=reconstruction))
        settings = lowrank_settings({n: layer.option() for n, layer in plan.layers.items()})
        compressed = copy.deepcopy(model)
        records = apply_lowrank_(compressed, settings, reconstruction.stats).layers
        cosine = evaluate(compressed, "minilm-planned", heldout, reference, batch_size=BATCH).value
        removed = sum(r.params_before - r.params_after for r in records.values())
        results.append({"target_reduction": reduction, "reduction": removed / linear, "mean_cosine": cosine,
                        "size_mb": plan.totals["size_mb"], "budget_mb": budget,
                        "predicted_delta_loss": plan.predicted_delta_loss, "factorised_layers": len(records),
                        "ranks": {n: r.rank for n, r in records.items()}, "seconds": time.perf_counter() - start})
        print(f"{reduction:.0%}: reduction {removed / linear:.3f}, cosine {cosine:.4f}, "
              f"{len(records)} layers factorised, {results[-1]['seconds']:.0f} s", flush=True)
    return {"model": "builtin:minilm", "encoder_linear_params": linear, "ratios": RATIOS, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report = run()
    if args.json:
        write_json(Path(args.json), report)


if __name__ == "__main__":
    main()
