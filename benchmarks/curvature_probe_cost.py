"""Seconds per probe, side by side in one process: a Hessian-vector product (double backward
with kept graphs: the only probe before issue 13) vs an output-space Gauss-Newton probe (one
backward of the kept forward graph; the default for the distill loss), on builtin:minilm over
builtin:sentences (self-distillation: its Hessian at the start point is the Gauss-Newton matrix).

Run: python benchmarks/curvature_probe_cost.py [--samples 64] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from compress.curvature.gauss_newton import estimate_gauss_newton_traces
from compress.curvature.prepare import prepare_operator
from compress.curvature.trace import QuadraticForms, TraceSpec
from compress.data.spec import load_data
from compress.jsonio import write_json
from compress.models.spec import build_model


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model("builtin:minilm").eval()
    data = load_data("builtin:sentences", None, "train")
    data = data.subset(range(min(args.samples, len(data))), "sentences[first]")
    operator = prepare_operator(model, data, "distill", batch_size=128)
    vector = torch.randn(operator.dim)
    operator.matvec(vector)  # builds and keeps the gradient graphs
    hvp = statistics.median(seconds(lambda: operator.matvec(vector)) for _ in range(args.repeats))
    forms = QuadraticForms(operator.batch_sizes, len(operator.layout.layers), len(data))
    spec = TraceSpec(max_products=1, probes_per_round=1, min_probes=1)
    estimate_gauss_newton_traces(operator, "distill", spec, forms)  # builds and keeps the forward graphs
    spec = TraceSpec(max_products=args.repeats, probes_per_round=args.repeats)
    probe = seconds(lambda: estimate_gauss_newton_traces(operator, "distill", spec, forms)) / args.repeats
    report = {"samples": len(data), "params": operator.dim, "seconds_per_hvp": hvp,
              "seconds_per_gauss_newton_probe": probe, "probes_per_second_ratio": hvp / probe}
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
