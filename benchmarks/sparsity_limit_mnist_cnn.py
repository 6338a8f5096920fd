"""Predicted pruning limits vs where builtin:mnist-cnn actually breaks.

Prediction (Zhang et al., arXiv 2306.05857, as in compress/plan/limits.py): ε = standard deviation
of the mini-batch (128) training losses at the trained weights; the whole-model limit p* is the
fixed point p = g(R(p)) with the SLQ spectral density of the full Hessian (1,024 training digits);
the trace-only Jensen bound and the one-shot trace criterion ½·(Tr(H)/D)·R(p)² = ε are also given.

Actual: global one-shot magnitude pruning of every Conv/Linear weight at pruned fractions from
50% to 99%, held-out accuracy (1,000 digits) one-shot and after a short retraining (1 epoch of
AdamW on the 4,000 training digits with the mask fixed). The break point is the smallest pruned
fraction losing more than 1 point of held-out accuracy.

Run: python benchmarks/sparsity_limit_mnist_cnn.py [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import torch
from torch import nn

from compress.curvature.estimate import CurvatureSpec, estimate_curvature
from compress.data.spec import load_data
from compress.jsonio import write_json
from compress.models.spec import build_model
from compress.plan.limits import loss_tolerance, model_limit
from compress.plan.make import plannable_layers
from compress.plan.sparsity_limit import removed_norm, trace_pruning_limit

FRACTIONS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)


def global_masks(model: nn.Module, fraction: float) -> dict[str, torch.Tensor]:
    """Keep the largest (1 − fraction) of all Conv/Linear weights by magnitude."""
    weights = {n: m.weight.detach() for n, m in plannable_layers(model).items()}
    magnitudes = torch.cat([w.abs().flatten() for w in weights.values()])
    threshold = torch.kthvalue(magnitudes, max(1, int(fraction * magnitudes.numel()))).values
    return {n: w.abs() > threshold for n, w in weights.items()}


def apply_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, mask in masks.items():
            model.get_submodule(name).weight.mul_(mask)


def accuracy(model: nn.Module, data) -> float:
    with torch.no_grad():
        return float((model.eval()(*data.inputs).argmax(1) == data.targets).float().mean())


def retrain_(model: nn.Module, masks: dict[str, torch.Tensor], train, seed: int = 0) -> None:
    """One epoch of AdamW (lr 1e-3) with the pruned weights held at zero; BN statistics frozen."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    (images,), labels = train.inputs, train.targets
    model.eval()  # BN in eval mode: the statistics belong to the dense model
    for index in torch.randperm(len(train)).split(64):
        loss = nn.functional.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        apply_masks_(model, masks)


def predictions(model: nn.Module, calibration, train) -> dict[str, float]:
    curvature = estimate_curvature(model, calibration, CurvatureSpec(slq_runs=4))
    epsilon = loss_tolerance(model, train, "ce", 128)
    weights = np.concatenate([m.weight.detach().double().flatten().numpy() for m in plannable_layers(model).values()])
    trace_fraction = trace_pruning_limit(weights, curvature.trace * weights.size / sum(
        p.numel() for p in model.parameters()), epsilon)
    mean_eigenvalue = curvature.trace / sum(p.numel() for p in model.parameters())
    one_shot = next((p for p in np.linspace(0, 1, 1001) if 0.5 * mean_eigenvalue * removed_norm(weights, p) ** 2 > epsilon), 1.0)
    return {"loss_tolerance": epsilon, "spectral_limit": model_limit(model, curvature, epsilon),
            "trace_only_limit": trace_fraction, "one_shot_trace_criterion": float(one_shot),
            "curvature_seconds": curvature.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    base = build_model("builtin:mnist-cnn")
    train = load_data("builtin:mnist5k", "train", "train")
    calibration = train.subset(range(1024), "calibration")
    heldout = load_data("builtin:mnist5k", "heldout", "heldout")
    report = {"predicted": predictions(base, calibration, train), "fp32_accuracy": accuracy(base, heldout), "sweep": []}
    for fraction in FRACTIONS:
        model = copy.deepcopy(base)
        masks = global_masks(model, fraction)
        apply_masks_(model, masks)
        one_shot = accuracy(model, heldout)
        retrain_(model, masks, train)
        report["sweep"].append({"pruned": fraction, "one_shot": one_shot, "retrained": accuracy(model, heldout)})
    for kind in ("one_shot", "retrained"):
        broken = [row["pruned"] for row in report["sweep"] if row[kind] < report["fp32_accuracy"] - 0.01]
        report[f"break_point_{kind}"] = min(broken) if broken else None
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
