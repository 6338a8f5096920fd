"""Low-rank factorisation of builtin:minilm without fine-tuning: plain SVD vs whitened (SVD-LLM) vs
Fisher-weighted (FWSVD) vs both, side by side in one run (issue 14).

Every linear layer of the encoder (36: query/key/value/attention output/intermediate/output of the
6 blocks) is factorised at the same parameter reduction p ∈ {10, 20, 30, 40}% (rank_ratio = 1 − p,
rank ⌊(1 − p)·m·n/(m + n)⌋). Calibration: the train split of builtin:sentences (256 sentences);
layer statistics H = 2·XXᵀ/N and the output Fisher diagonal are taken once on the FP32 model.
The Fisher is the Gauss-Newton diagonal of the self-distillation loss ½‖e − e_FP32‖² = 1 − cos(e,
e_FP32) on the unit-norm embedding e (one Gaussian probe per sentence, ``compress/lowrank/fisher.py``).
Metric: mean cosine to the FP32 embeddings on the 64 held-out sentences.

"planned" rows: per-layer ranks at the same total parameter reduction, chosen by a Lagrangian
allocation local to this benchmark (each layer minimises predicted error + λ·parameters over its
useful ranks and "unfactorised"; λ bisected to meet the budget) on the ``fisher_whitened`` error
curves (``predicted_errors``: the output error weighted by the output Fisher, comparable across
layers). It stands in for the planner's rank options until those are merged.

Run: python benchmarks/lowrank_minilm.py [--json benchmarks/results/lowrank_minilm.json]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from compress.data.spec import load_data
from compress.evaluation import evaluate
from compress.jsonio import write_json
from compress.lowrank.apply import apply_lowrank_, predicted_errors
from compress.lowrank.fisher import output_fisher_diag
from compress.lowrank.modules import matrix_shape
from compress.lowrank.settings import METHODS, LowRankSettings
from compress.lowrank.size import max_useful_rank
from compress.models.spec import build_model
from compress.reconstruct.stats import collect_layer_stats

REDUCTIONS = (0.1, 0.2, 0.3, 0.4)
BATCH = 32


def encoder_linears(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules()
            if name.startswith("encoder.encoder.layer.") and isinstance(module, nn.Linear)]


def uniform(names: list[str], method: str, reduction: float) -> dict[str, LowRankSettings]:
    return {name: LowRankSettings(rank_ratio=round(1 - reduction, 6), method=method) for name in names}


def planned(curves: dict[str, list[float]], shapes: dict[str, tuple[int, int]], reduction: float,
            method: str) -> dict[str, LowRankSettings]:
    """Per-layer ranks (or none) minimising Σ predicted error at ≤ (1 − reduction) of the weights."""
    options = {name: [(None, m * n, 0.0)] + [(r, r * (m + n), curves[name][r]) for r in range(1, max_useful_rank(m, n) + 1)]
               for name, (m, n) in shapes.items()}
    budget = (1 - reduction) * sum(m * n for m, n in shapes.values())

    def choice(lam: float) -> dict[str, tuple]:
        return {name: min(opts, key=lambda o: o[2] + lam * o[1]) for name, opts in options.items()}

    low, high = 0.0, 1.0
    while sum(o[1] for o in choice(high).values()) > budget:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if sum(o[1] for o in choice(mid).values()) > budget else (low, mid)
    return {name: LowRankSettings(rank=o[0], method=method) for name, o in choice(high).items() if o[0] is not None}


def measure(model: nn.Module, reference: nn.Module, heldout, names: list[str], stats, fisher, method: str,
            reduction: float, settings: dict[str, LowRankSettings], allocation: str) -> dict:
    start = time.perf_counter()
    compressed = copy.deepcopy(model)
    records = apply_lowrank_(compressed, settings, stats, fisher).layers
    cosine = evaluate(compressed, f"minilm-{method}", heldout, reference, batch_size=BATCH).value
    linear = sum(model.get_submodule(name).weight.numel() + model.get_submodule(name).bias.numel() for name in names)
    before, after = linear, linear - sum(r.params_before - r.params_after for r in records.values())
    print(f"{allocation:>8} {method:>16} {1 - after / before:.3f} cos {cosine:.4f}", flush=True)
    return {"allocation": allocation, "method": method, "target_reduction": reduction, "mean_cosine": cosine,
            "factorised_layers": len(records), "ranks": {name: r.rank for name, r in records.items()},
            "params_before": before, "params_after": after, "reduction": 1 - after / before,
            "output_error_sum": sum(r.output_error for r in records.values()),
            "seconds": time.perf_counter() - start}


def run() -> dict:
    torch.set_num_threads(1)  # the machine is shared: two LAPACK threads under load made each SVD ~10x slower
    model = build_model("builtin:minilm")
    reference = copy.deepcopy(model)
    train = load_data("builtin:sentences", None, "train")
    heldout = load_data("builtin:sentences", None, "heldout")
    names = encoder_linears(model)
    batches = [batch.inputs for batch in train.batches(BATCH)]
    start = time.perf_counter()
    stats = collect_layer_stats(model, batches, names)
    stats_seconds = time.perf_counter() - start
    start = time.perf_counter()
    fisher = output_fisher_diag(model, batches, names)
    fisher_seconds = time.perf_counter() - start
    results = [measure(model, reference, heldout, names, stats, fisher, method, reduction,
                       uniform(names, method, reduction), "uniform")
               for reduction in REDUCTIONS for method in METHODS]
    curves = {name: predicted_errors(model.get_submodule(name), "fisher_whitened", stats[name], fisher[name])
              for name in names}
    shapes = {name: matrix_shape(model.get_submodule(name))[:2] for name in names}
    results += [measure(model, reference, heldout, names, stats, fisher, method, reduction,
                        planned(curves, shapes, reduction, method), "planned")
                for reduction in REDUCTIONS for method in ("whitened", "fisher_whitened")]
    return {"model": "builtin:minilm", "layers": len(names), "calibration_sentences": len(train),
            "heldout_sentences": len(heldout), "tokens": next(iter(stats.values())).count,
            "stats_seconds": stats_seconds, "fisher_seconds": fisher_seconds, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/lowrank_minilm.json")
    args = parser.parse_args()
    write_json(args.json, run())


if __name__ == "__main__":
    main()
