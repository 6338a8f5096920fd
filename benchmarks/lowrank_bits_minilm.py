"""builtin:minilm at equal size: low-rank vs 4-bit weights vs both, planned, no fine-tuning.

Budgets (``size_mb``): the FP32 model with the encoder's 36 linear layers at 4 bits and at 3 bits
per weight (per-channel scales included), and half way between 3 and 2 bits. Arms, each planned
by ``make_plan`` (trace-only sensitivity; Ω of every option from what apply deploys: GPTQ for
plain bit widths, the Fisher-weighted whitened factors rounded to nearest for rank options,
``compress/plan/ranks.py``) and applied through apply's pipeline (true-sequential GPTQ, factors
rounded to nearest), the unused pooler held at fp32:

- ``bits``: weight bits 2, 3, 4, 8 or fp32 per layer (per-channel scales);
- ``bits+ranks``: the same and every rank ratio 0.25, 0.35, …, 0.95 at each of those bit widths;
- ``ranks``: float rank options only (ratios 0.025 … 0.975), at the 4-bit budget only.

Metric: mean cosine to the FP32 embeddings on the 64 held-out sentences.

Run: OMP_NUM_THREADS=1 python benchmarks/lowrank_bits_minilm.py [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

from lowrank_plan_minilm import BATCH, RATIOS, setup  # this folder, run as a script

from compress.apply.pipeline import ApplySpec, apply_
from compress.evaluation import evaluate
from compress.jsonio import write_json
from compress.plan.channels import ChannelPlan
from compress.plan.make import PlanEvidence, PlanSpec, make_plan, plannable_layers
from compress.plan.settings import lowrank_settings, plan_settings
from compress.plan.size import size_model
from compress.vocab.options import LayerOption

BITS = (2, 3, 4, 8, None)
COARSE = tuple(round(0.25 + 0.1 * k, 2) for k in range(8))  # 0.25 … 0.95


def budgets(found) -> dict[str, float]:
    """size_mb of the model with every encoder linear at 4 and 3 bits, and half way to 2."""
    layers = plannable_layers(found.model)
    sizes = size_model(found.model, list(layers), ChannelPlan(found.model, {}, {}))
    held = {o.target for o in found.held}

    def at(bits: int) -> float:
        return sizes.total_bits({n: LayerOption(None if n in held else bits) for n in layers}) / 8e6

    return {"4-bit size": at(4), "3-bit size": at(3), "2.5-bit size": (at(3) + at(2)) / 2}


def measured(found, budget: float, bits: tuple, ranks: tuple) -> dict:
    start = time.perf_counter()
    spec = PlanSpec({"size_mb": budget}, bits=bits, ranks=ranks, overrides=found.held)
    plan = make_plan(found.model, found.curvature, spec, PlanEvidence(reconstruction=found.reconstruction))
    options = {n: layer.option() for n, layer in plan.layers.items()}
    quantization, pruning = plan_settings(options)
    model = copy.deepcopy(found.model)
    apply_(model, ApplySpec(quantization, pruning, loss="distill", lowrank=lowrank_settings(options)), found.train,
           None, None, BATCH)
    cosine = evaluate(model.eval(), "minilm", found.heldout, found.reference, batch_size=BATCH).value
    labels = [o.label() for n, o in options.items() if n not in {x.target for x in found.held}]
    return {"size_mb": plan.totals["size_mb"], "mean_cosine": cosine, "predicted_delta_loss": plan.predicted_delta_loss,
            "factorised_layers": sum(o.rank is not None for o in options.values()),
            "choices": {label: labels.count(label) for label in sorted(set(labels))},
            "seconds": time.perf_counter() - start}


def run() -> dict:
    found = setup()
    rows = []
    for name, budget in budgets(found).items():
        arms = {"bits": (BITS, ()), "bits+ranks": (BITS, COARSE)}
        if name == "4-bit size":
            arms["ranks"] = ((None,), RATIOS)
        for arm, (bits, ranks) in arms.items():
            rows.append({"budget": name, "budget_mb": budget, "arm": arm, **measured(found, budget, bits, ranks)})
            print(rows[-1], flush=True)
    return {"model": "builtin:minilm", "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report = run()
    if args.json:
        write_json(Path(args.json), report)


if __name__ == "__main__":
    main()
