"""Cost of per-layer Hessian traces on builtin:mnist-cnn, side by side in one run.

Every method must bring every layer to ±5% at 95% confidence (floor: 1% of the total trace):
- ours: Lanczos-deflated Hutchinson with joint probes (compress.curvature.trace);
- plain Hutchinson: the same joint probes without deflation, same stopping rule;
- per-layer loop (HAWQ-V2 era): for each layer, probes restricted to that layer's block, each a
  full Hessian-vector product, until that layer meets the rule.
Also the cost of one product relative to one gradient over the same data (median of repeats).

Run: python benchmarks/curvature_cost.py [--samples 512] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from compress.curvature.prepare import prepare_operator
from compress.curvature.trace import Z95, QuadraticForms, TraceSpec, estimate_layer_traces, rademacher
from compress.data.spec import load_data
from compress.jsonio import write_json
from compress.models.spec import build_model


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def worst_halfwidth(traces) -> float:
    """Largest 95% half-width relative to max(|trace|, 1% of total) over layers."""
    scale = torch.clamp(traces.traces.abs(), min=0.01 * abs(traces.total))
    return float((Z95 * traces.stderrs / scale).max())


def per_layer_loop(operator, total_trace: float, rel_error: float, max_per_layer: int, seed: int) -> dict:
    """Hutchinson on each diagonal block separately; returns products and traces per layer."""
    generator = torch.Generator().manual_seed(seed)
    floor = 0.01 * abs(total_trace)
    products, traces, capped = 0, {}, []
    for name, (start, stop) in operator.layout.layers.items():
        samples: list[float] = []
        while len(samples) < max_per_layer:
            probe = torch.zeros(operator.dim)
            probe[start:stop] = rademacher(stop - start, generator, torch.float32)
            samples.append(float(torch.dot(probe[start:stop], operator.matvec(probe)[start:stop])))
            products += 1
            if len(samples) >= 8:
                mean, stderr = statistics.fmean(samples), statistics.stdev(samples) / len(samples) ** 0.5
                if Z95 * stderr <= rel_error * max(abs(mean), floor):
                    break
        else:
            capped.append(name)
        traces[name] = statistics.fmean(samples)
    return {"products": products, "traces": traces, "capped_layers": capped}


def product_cost(operator, repeats: int) -> dict:
    """Median seconds of one gradient and of one product of each kind, over the same batches."""
    params = {n: p.detach().requires_grad_() for n, p in operator.params.items()}

    def gradient() -> None:
        for batch, reference in zip(operator.batches, operator.references):
            loss = operator._loss(params, batch, reference)
            torch.autograd.grad(loss, list(params.values()), allow_unused=True)

    vector = torch.randn(operator.dim)
    gradient()  # warm-up
    costs = {"gradient": statistics.median(timed(gradient)[1] for _ in range(repeats))}
    for name, product, reuse in (("reverse-over-reverse, graphs reused", "reverse-over-reverse", True),
                                 ("reverse-over-reverse", "reverse-over-reverse", False),
                                 ("forward-over-reverse", "forward-over-reverse", False), ("ggn", "ggn", False)):
        operator.product, operator.reuse_graphs = product, reuse
        operator.matvec(vector)  # warm-up (and, when reused, the graphs)
        costs[name] = statistics.median(timed(lambda: operator.matvec(vector))[1] for _ in range(repeats))
    operator.product, operator.reuse_graphs = "reverse-over-reverse", True
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-products", type=int, default=1600, help="cap for each method")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model("builtin:mnist-cnn")
    data = load_data("builtin:mnist5k", "train", "train").subset(range(args.samples), "mnist5k[train]")
    operator = prepare_operator(model, data, "ce", batch_size=128)

    def run(spec: TraceSpec):
        operator.num_products = 0
        forms = QuadraticForms(operator.batch_sizes, len(operator.layout.layers), operator.total_samples)
        result, seconds = timed(lambda: estimate_layer_traces(operator.matvec, operator.layout, operator.dtype, spec,
                                                              forms))
        return result, seconds, operator.num_products

    ours, ours_s, ours_n = run(TraceSpec(max_products=args.max_products))
    print(f"ours: {ours_n} products, {ours_s:.1f} s, converged {ours.converged}", file=sys.stderr, flush=True)
    plain, plain_s, plain_n = run(TraceSpec(deflation_steps=0, max_products=args.max_products))
    print(f"plain: {plain_n} products, {plain_s:.1f} s, converged {plain.converged}", file=sys.stderr, flush=True)
    operator.num_products = 0
    loop, loop_s = timed(lambda: per_layer_loop(operator, ours.total, 0.05, args.max_products // 4, seed=0))
    print(f"loop: {loop['products']} products, {loop_s:.1f} s", file=sys.stderr, flush=True)
    costs = product_cost(operator, args.repeats)
    report = {
        "samples": args.samples, "layers": len(operator.layout.layers), "params": operator.dim,
        "ours": {"products": ours_n, "seconds": ours_s, "converged": ours.converged, "trace": ours.total},
        "plain_hutchinson": {"products": plain_n, "seconds": plain_s, "converged": plain.converged,
                             "worst_layer_rel_halfwidth": worst_halfwidth(plain),
                             "trace": plain.total},
        "per_layer_loop": {"products": loop["products"], "seconds": loop_s, "trace": sum(loop["traces"].values()),
                           "layers_that_hit_the_cap": loop["capped_layers"]},
        "products_ratio_plain_over_ours": plain_n / ours_n,
        "time_ratio_loop_over_ours": loop_s / ours_s,
        "seconds_per": costs,
        "product_over_gradient": {k: v / costs["gradient"] for k, v in costs.items() if k != "gradient"},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
