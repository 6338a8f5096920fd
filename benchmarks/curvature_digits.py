"""Do the defaults hold on smooth nets? A tanh MLP and a GELU CNN trained on all 1,797 8x8
digits (builtin:digits, split "all"); curvature with default settings vs the dense float64
Hessian over the same 1,797 samples.

Checks (issue 13): every layer's trace within 5% of exact (floor: 1% of the total), the top-5
eigenvalues within 1%, and the reported 95% bar covering the true error of every layer.

With ``--coverage-seeds S`` it also measures, on the tanh MLP, how often the 95% bar of the
deflated Hutchinson estimate holds the exact trace over S seeds, after m residual probes, and the
skewness of the per-probe samples (why a single seed can miss).

Run: python benchmarks/curvature_digits.py [--coverage-seeds 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from compress.curvature.estimate import CurvatureSpec, estimate_curvature
from compress.curvature.intervals import Z95, student_scale
from compress.curvature.prepare import prepare_operator
from compress.curvature.trace import QuadraticForms, TraceSpec, estimate_layer_traces
from compress.data.spec import load_data
from compress.jsonio import write_json


def tanh_mlp() -> nn.Module:
    """64 -> 24 -> 10 with tanh: 1,810 parameters."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.Tanh(), nn.Linear(24, 10))


def gelu_cnn() -> nn.Module:
    """conv3x3(1->4) GELU conv3x3(4->8, stride 2) GELU, linear(32->10): 666 parameters."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Conv2d(4, 8, 3, stride=2), nn.GELU(), nn.Flatten(),
                         nn.Linear(32, 10))


def train(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, steps: int = 400) -> nn.Module:
    """Full-batch Adam on cross-entropy."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def compare(name: str, model: nn.Module, data) -> dict:
    exact = estimate_curvature(model, data, CurvatureSpec(exact=True))
    start = time.perf_counter()
    ours = estimate_curvature(model, data, CurvatureSpec())
    seconds = time.perf_counter() - start
    floor = 0.01 * abs(exact.trace)
    layers = {}
    for layer, reference in exact.layers.items():
        estimate = ours.layers[layer]
        error = estimate.trace - reference.trace
        layers[layer] = {"exact": reference.trace, "ours": estimate.trace,
                         "rel_error": abs(error) / max(abs(reference.trace), floor),
                         "halfwidth_95": Z95 * estimate.trace_stderr, "covered": abs(error) <= Z95 * estimate.trace_stderr}
    top = [abs(a - b) / abs(b) for a, b in zip(ours.top_eigenvalues, exact.top_eigenvalues)]
    return {"model": name, "params": sum(l.num_params for l in exact.layers.values()), "samples": len(data),
            "layers": layers, "worst_layer_rel_error": max(l["rel_error"] for l in layers.values()),
            "every_layer_covered": all(l["covered"] for l in layers.values()),
            "top5_exact": exact.top_eigenvalues, "top5_ours": ours.top_eigenvalues, "worst_top5_rel_error": max(top),
            "products": ours.num_hvps, "seconds": seconds, "method": ours.method}


def coverage(model: nn.Module, data, seeds: int, probe_counts: tuple[int, ...] = (16, 24, 32, 48, 64)) -> dict:
    """Per layer and residual probe count m: the share of seeds whose 95% bar (Student-t, as
    reported) holds the exact trace; the seed-0 ratios error / half-width; the per-probe skewness."""
    from scipy.stats import skew

    exact = estimate_curvature(model, data, CurvatureSpec(exact=True))
    truth = torch.tensor([layer.trace for layer in exact.layers.values()], dtype=torch.float64)
    operator = prepare_operator(model, data, "ce", CurvatureSpec().batch_size)
    hits = {m: torch.zeros(len(truth)) for m in probe_counts}
    ratios, skews = {}, []
    for seed in range(seeds):
        forms = QuadraticForms(operator.batch_sizes, len(truth), len(data))
        spec = TraceSpec(seed=seed, rel_error=1e-9, max_products=TraceSpec().deflation_steps + max(probe_counts))
        estimate_layer_traces(operator.matvec, operator.layout, operator.dtype, spec, forms)
        samples = torch.stack(forms.samples).sum(dim=1)  # probes x layers
        skews.append(skew(samples.numpy(), axis=0).tolist())
        for m in probe_counts:
            error = forms.exact.sum(dim=0) + samples[:m].mean(dim=0) - truth
            halfwidth = Z95 * student_scale(m) * samples[:m].std(dim=0) / m**0.5
            hits[m] += (error.abs() <= halfwidth).double()
            if seed == 0:
                ratios[m] = (error / halfwidth).tolist()
    return {"seeds": seeds, "layers": list(exact.layers), "covered_share": {m: (h / seeds).tolist() for m, h in hits.items()},
            "seed0_error_over_halfwidth": ratios, "per_probe_skewness_mean": torch.tensor(skews).mean(dim=0).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coverage-seeds", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    data = load_data("builtin:digits", "all", "all")
    inputs, targets = data.inputs[0], data.targets
    report = []
    for name, factory in (("tanh-mlp", tanh_mlp), ("gelu-cnn", gelu_cnn)):
        model = train(factory(), inputs, targets)
        report.append(compare(name, model, data))
        row = report[-1]
        print(f"{name}: worst layer {100 * row['worst_layer_rel_error']:.2f}%, worst top-5 "
              f"{100 * row['worst_top5_rel_error']:.3f}%, covered {row['every_layer_covered']}, "
              f"{row['products']} products, {row['seconds']:.1f} s", flush=True)
    if args.coverage_seeds:
        study = coverage(train(tanh_mlp(), inputs, targets), data, args.coverage_seeds)
        report.append({"model": "tanh-mlp", "coverage_study": study})
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
