"""Our planner vs NVIDIA ModelOpt ``auto_quantize`` on builtin:mnist-cnn, side by side in one run
(weights only, post-training, no fine-tuning).

Both get the same 1,024 training digits and cross-entropy, and the same candidates: symmetric
per-channel (axis 0) weight-only INT2/3/4/8 or float, activations float. For average weight bits
3 and 2.5: ours (``make_plan`` on the traces, trace-only, hybrid max(Ω, measured ΔL), and hybrid with
the CLI's default verification of the 8 least-ΣΩ allocations by measured whole-plan loss),
ModelOpt with the same cost accounting as ours (a float weight = 32 bits) and with its own (a
float weight = 16 bits), and uniform bits that meet the budget. Held-out accuracy on the 1,000
held-out digits (ModelOpt's own fake-quantized model is evaluated, not a re-quantization; its
weight quantizer is checked against ours), loss on the calibration digits, the average bits
Σ b·n / Σ n over Conv/Linear weights (float = 32) that each achieved, per-layer choices, wall
times, and the digits one got right and the other wrong (McNemar). The allocation with the least
calibration loss found by trying every one that meets the budget shows what was reachable at all.
ModelOpt's preset
formats cannot express budgets under 4 bits (recorded with its own message), so they are
compared at 4, its nearest budget.

Run: python benchmarks/modelopt_side_by_side.py [--json benchmarks/results/modelopt_side_by_side.json]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time

import torch
from scipy.stats import binomtest

from compress.curvature.estimate import CurvatureSpec, estimate_curvature
from compress.data.spec import load_data
from compress.errors import InputError
from compress.jsonio import write_json
from compress.models.spec import build_model
from compress.plan.make import PlanEvidence, PlanSpec, make_plan, plannable_layers
from compress.plan.measured import SingleLayerLoss
from compress.plan.peers import PER_CHANNEL_BITS, average_bits, gap_in_steps, modelopt_auto_quantize
from compress.plan.sensitivity import LayerOption
from compress.quant.apply import compress_weights_
from compress.quant.weights import fake_quantize_per_channel

BUDGETS = (3.0, 2.5)
NEAREST_PRESET_BUDGET = 4.0
PRESETS = ("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "INT8_WEIGHT_ONLY_CFG")  # ModelOpt's weight-only integer presets


def outcome(model, heldout, calibration) -> tuple[dict, torch.Tensor]:
    """Held-out accuracy, calibration loss, and which held-out digits the model gets right."""
    with torch.no_grad():
        correct = model(*heldout.inputs).argmax(1) == heldout.targets
        loss = torch.nn.functional.cross_entropy(model(*calibration.inputs), calibration.targets)
    return {"accuracy": float(correct.float().mean()), "calibration_loss": float(loss)}, correct


def ours(base, curvature, curvature_seconds, budget, sensitivity, heldout, calibration) -> tuple[dict, torch.Tensor]:
    """Our plan at ``budget`` (a fresh measurement cache, so the time stands alone) and its outcome."""
    start = time.perf_counter()
    measure = SingleLayerLoss(base, calibration, "ce") if sensitivity.startswith("hybrid") else None
    verify = 8 if sensitivity == "hybrid_verified" else 1  # the CLI's default: the best of 8 by actual loss
    plan = make_plan(base, curvature, PlanSpec(budgets={"avg_bits": budget}, bits=(*PER_CHANNEL_BITS, None),
                                               verify=verify), PlanEvidence(measure=measure))
    seconds = time.perf_counter() - start
    bits = {name: layer.weight_bits for name, layer in plan.layers.items()}
    model = compress_weights_(copy.deepcopy(base), {name: LayerOption(b) for name, b in bits.items()})
    result, correct = outcome(model, heldout, calibration)
    return {**result, "avg_bits": average_bits(base, bits), "bits": bits,
            "predicted": {n: layer.considered for n, layer in plan.layers.items()},
            "seconds": {"curvature": curvature_seconds, "plan": seconds, "total": curvature_seconds + seconds}}, correct


def peer(base, budget, formats, float_bits, heldout, calibration) -> tuple[dict, torch.Tensor | None]:
    """ModelOpt at ``budget``: its own model's outcome and choices, or the reason it refuses."""
    try:
        model, result = modelopt_auto_quantize(base, calibration, budget, formats, float_bits)
    except InputError as exc:
        return {"refused": str(exc)}, None
    measured, correct = outcome(model, heldout, calibration)
    gaps = {n: gap_in_steps(m) for n, m in plannable_layers(model).items()
            if m.weight_quantizer.is_enabled and "per-channel" in result.layers[n].granularity}
    return {**measured, **result.to_dict(), "bits": {n: layer.num_bits for n, layer in result.layers.items()},
            "max_gap_to_our_quantizer_in_steps": max(gaps.values(), default=None)}, correct


def uniform(base, bits: int, heldout, calibration) -> dict:
    model = compress_weights_(copy.deepcopy(base), {n: LayerOption(bits) for n in plannable_layers(base)})
    return {**outcome(model, heldout, calibration)[0], "avg_bits": float(bits)}


def disagreements(a: torch.Tensor, b: torch.Tensor | None) -> dict | None:
    """Held-out digits only ``a`` gets right and only ``b`` gets right, and McNemar's exact
    two-sided p-value (binomial test on those discordant pairs)."""
    if b is None:
        return None
    ours_only, theirs_only = int((a & ~b).sum()), int((~a & b).sum())
    p_value = binomtest(ours_only, ours_only + theirs_only).pvalue if ours_only + theirs_only else 1.0
    return {"ours_only_correct": ours_only, "modelopt_only_correct": theirs_only, "mcnemar_p": float(p_value)}


def exhaustive(base, budget, heldout, calibration) -> dict:
    """The allocation with the least calibration loss of all that meet the budget (5^5 = 3,125
    to try): the best any planner that sees only the calibration digits could pick."""
    layers = plannable_layers(base)
    options = (*PER_CHANNEL_BITS, None)
    quantized = {n: {b: fake_quantize_per_channel(m.weight.detach(), b) for b in options} for n, m in layers.items()}
    model = copy.deepcopy(base)
    best, tried = (float("inf"), None), 0
    for combo in itertools.product(options, repeat=len(layers)):
        bits = dict(zip(layers, combo))
        if average_bits(base, bits) > budget + 1e-9:
            continue
        with torch.no_grad():
            for name, b in bits.items():
                model.get_submodule(name).weight.copy_(quantized[name][b])
            loss = float(torch.nn.functional.cross_entropy(model(*calibration.inputs), calibration.targets))
        best, tried = min(best, (loss, bits), key=lambda pair: pair[0]), tried + 1
    model = compress_weights_(copy.deepcopy(base), {n: LayerOption(b) for n, b in best[1].items()})
    return {**outcome(model, heldout, calibration)[0], "avg_bits": average_bits(base, best[1]), "bits": best[1],
            "allocations_tried": tried}


def smallest_preset_bits() -> dict:
    """ModelOpt's cost (effective bits) of every preset format, and the smallest."""
    import modelopt.torch.quantization as mtq
    from modelopt.torch.quantization.algorithms import QuantRecipe

    costs = {name: QuantRecipe(name).compression * 16 for name in sorted(mtq.config.choices)}
    smallest = min(costs.values())
    return {"smallest": smallest, "formats_at_smallest": [n for n, c in costs.items() if c == smallest]}


def compare(base, curvature, curvature_seconds, budget, heldout, calibration) -> dict:
    """Every contender at one budget."""
    row, correct = {}, {}
    for kind in ("trace", "hybrid", "hybrid_verified"):
        row[f"ours_{kind}"], correct[kind] = ours(base, curvature, curvature_seconds, budget, kind, heldout, calibration)
    for name, formats, float_bits in (("modelopt_matched_cost", PER_CHANNEL_BITS, 32),
                                      ("modelopt_own_cost", PER_CHANNEL_BITS, 16),
                                      ("modelopt_presets", PRESETS, 16)):
        row[name], theirs = peer(base, budget, formats, float_bits, heldout, calibration)
        row[name]["vs_ours_hybrid"] = disagreements(correct["hybrid"], theirs)
        row[name]["vs_ours_hybrid_verified"] = disagreements(correct["hybrid_verified"], theirs)
    for bits in range(2, 9):
        if bits <= budget < bits + 1:
            row[f"uniform_{bits}bit"] = uniform(base, bits, heldout, calibration)
    row["exhaustive_best_calibration_loss"] = exhaustive(base, budget, heldout, calibration)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    base = build_model("builtin:mnist-cnn")
    calibration = load_data("builtin:mnist5k", "train", "train").subset(range(1024), "calibration")
    heldout = load_data("builtin:mnist5k", "heldout", "heldout")
    start = time.perf_counter()
    curvature = estimate_curvature(base, calibration, CurvatureSpec())
    curvature_seconds = time.perf_counter() - start
    report = {"fp32": outcome(base, heldout, calibration)[0], "modelopt_preset_bits": smallest_preset_bits(),
              "curvature": {"seconds": curvature_seconds, "num_hvps": curvature.num_hvps},
              "budgets": {str(b): compare(base, curvature, curvature_seconds, b, heldout, calibration)
                          for b in (*BUDGETS, NEAREST_PRESET_BUDGET)}}
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
