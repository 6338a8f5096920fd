"""Curvature products per second, side by side in one process: one vector per pass (before
issue 13) vs k vectors per batched pass, for every product kind, and PyHessian's Hessian-vector
products on the same net.

Nets: the 970-parameter MNIST net of ``curvature_reference.py`` (cross-entropy over 1,000
digits, one batch, as PyHessian holds it) and, with ``--minilm-samples N``, builtin:minilm on the
first N of builtin:sentences (self-distillation). Kinds: Hessian-vector products by double
backward through kept gradient graphs (reverse-over-reverse) and by forward-over-reverse; the
Gauss-Newton product (jvp, output Hessian, Jᵀ through the kept forward graph); the output-space
trace probe (one Jᵀu per probe); and, for MiniLM, the Gram product J(Jᵀu)/N that the distill
spectrum now uses. Medians of ``--repeats`` timed calls after one warm-up call (which builds the
kept graphs); one torch thread.

With ``--minilm-defaults``, instead: ``estimate_curvature`` with default options on builtin:minilm
over all of builtin:sentences, twice in one process, with the token batching of
``compress.curvature.batching`` (the default) and without it (batches of 128, as before): seconds
(wall and CPU) in the traces and in the spectrum, products, the results, and the Ritz values of the Gram Lanczos
run after every step with their residual bounds β_m |e_mᵀ s_i| (Golub & Van Loan §10.1.4).

Run: OMP_NUM_THREADS=1 python benchmarks/curvature_throughput.py [--minilm-samples 32] [--json out.json]
     OMP_NUM_THREADS=1 python benchmarks/curvature_throughput.py --minilm-defaults [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from typing import Callable

import torch

from compress.curvature.gram import gram_matmat, output_size
from compress.curvature.operator import CurvatureOperator
from compress.curvature.prepare import prepare_operator
from compress.curvature.trace import rademacher
from compress.jsonio import write_json


def rate(function: Callable[[], object], products: int, repeats: int) -> float:
    """Products per second: median over ``repeats`` timed calls after a warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return products / statistics.median(times)


def probe_pass(operator: CurvatureOperator, count: int) -> Callable[[], object]:
    """``count`` output-space probes (Jᵀu, u Rademacher) through every batch's kept forward graph."""
    generator = torch.Generator().manual_seed(0)

    def run() -> None:
        for index, reference in enumerate(operator.references):
            shape = operator.output(index).shape
            probes = rademacher(count * shape.numel(), generator, operator.dtype).view(count, *shape)
            operator.pull_back(index, probes)

    return run


def product_rates(operator: CurvatureOperator, kinds: list[str], ks: list[int], repeats: int) -> dict:
    """{kind: {k: products per second}} for operator products and output-space probes."""
    table: dict[str, dict[int, float]] = {}
    for kind in kinds:
        table[kind] = {}
        for k in ks:
            if kind == "output-space probe":
                table[kind][k] = rate(probe_pass(operator, k), k, repeats)
            elif kind == "gram (distill spectrum)":
                vectors = torch.randn(k, output_size(operator))
                table[kind][k] = rate(lambda: gram_matmat(operator)(vectors), k, repeats)
            else:
                operator.product = kind
                vectors = torch.randn(k, operator.dim)
                table[kind][k] = rate(lambda: operator.matmat(vectors), k, repeats)
            print(f"  {kind:28s} k={k:2d}: {table[kind][k]:9.2f} products/s", flush=True)
    return table


def pyhessian_rate(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, repeats: int) -> float:
    """PyHessian's Hutchinson loop: one Hessian-vector product per probe through its kept graph."""
    from pyhessian import hessian

    engine = hessian(model, torch.nn.CrossEntropyLoss(), data=(inputs, targets), cuda=False)
    probes = 50
    return rate(lambda: engine.trace(maxIter=probes, tol=0.0), probes, repeats)


def small_net(repeats: int, ks: list[int]) -> dict:
    from curvature_reference import small_mnist_net_and_data

    model, data = small_mnist_net_and_data(1000)
    operator = prepare_operator(model, data, "ce", batch_size=len(data))
    kinds = ["reverse-over-reverse", "forward-over-reverse", "ggn", "output-space probe"]
    print(f"970-parameter net, {len(data)} digits:", flush=True)
    table = product_rates(operator, kinds, ks, repeats)
    table["pyhessian (reverse-over-reverse)"] = {1: pyhessian_rate(model, data.inputs[0], data.targets, repeats)}
    print(f"  pyhessian                    k= 1: {table['pyhessian (reverse-over-reverse)'][1]:9.2f} products/s")
    return {"net": "mnist 7x7 -> 16 tanh -> 10", "params": operator.dim, "samples": len(data), "rates": table}


def minilm(samples: int, repeats: int, ks: list[int]) -> dict:
    from compress.data.spec import load_data
    from compress.models.spec import build_model

    model = build_model("builtin:minilm").eval()
    data = load_data("builtin:sentences", None, "train")
    data = data.subset(range(min(samples, len(data))), "sentences[first]")
    operator = prepare_operator(model, data, "distill", batch_size=128)
    kinds = ["reverse-over-reverse", "ggn", "gram (distill spectrum)", "output-space probe"]
    print(f"builtin:minilm, {len(data)} sentences:", flush=True)
    return {"net": "builtin:minilm", "params": operator.dim, "samples": len(data),
            "rates": product_rates(operator, kinds, ks, repeats)}


def ritz_history(alphas: list[float], betas: list[float], top: int) -> list[dict]:
    """Per Lanczos step m: the top Ritz values of T_m and their residual bounds β_m |e_mᵀ s_i|."""
    import numpy as np
    from scipy.linalg import eigh_tridiagonal

    history = []
    for m in range(2, len(alphas) + 1):
        values, vectors = eigh_tridiagonal(np.array(alphas[:m]), np.array(betas[: m - 1]))
        order = np.argsort(values)[::-1][:top]
        beta = betas[m - 1] if m - 1 < len(betas) else 0.0
        history.append({"steps": m, "ritz": values[order].tolist(), "bounds": (beta * np.abs(vectors[-1, order])).tolist()})
    return history


def minilm_defaults(batching: bool) -> dict:
    """``estimate_curvature`` with defaults on builtin:minilm over builtin:sentences; with
    ``batching`` off, ``compress.curvature.batching`` is bypassed (batches of 128, as before)."""
    import compress.curvature.estimate as stage
    from compress.curvature.estimate import CurvatureSpec, estimate_curvature
    from compress.data.spec import load_data
    from compress.models.spec import build_model

    model = build_model("builtin:minilm").eval()
    data = load_data("builtin:sentences", None, "train")
    marks: dict[str, float] = {}
    runs: list = []
    chosen: list[int] = []
    original_lanczos, original_batch_size = stage.gram_lanczos, stage.curvature_batch_size

    def timed_lanczos(operator, *args, **kwargs):
        marks["traces_done"], marks["traces_done_cpu"] = time.perf_counter(), time.process_time()
        result = original_lanczos(operator, *args, **kwargs)
        runs.extend(result[0])
        return result

    def batch_size(data, size):
        chosen.append(original_batch_size(data, size) if batching else size)
        return chosen[-1]

    stage.gram_lanczos, stage.curvature_batch_size = timed_lanczos, batch_size
    try:
        start, start_cpu = time.perf_counter(), time.process_time()
        result = estimate_curvature(model, data, CurvatureSpec())
        end, end_cpu = time.perf_counter(), time.process_time()
    finally:
        stage.gram_lanczos, stage.curvature_batch_size = original_lanczos, original_batch_size
    from compress.curvature.intervals import Z95

    linear = [layer for name, layer in result.layers.items() if isinstance(model.get_submodule(name), torch.nn.Linear)]
    worst = max(Z95 * layer.trace_stderr / max(abs(layer.trace), 0.01 * abs(result.trace)) for layer in linear)
    row = {"token_batching": batching, "batch_size": chosen[-1], "seconds": end - start,
           "seconds_traces": marks["traces_done"] - start, "seconds_spectrum": end - marks["traces_done"],
           "cpu_seconds_traces": marks["traces_done_cpu"] - start_cpu,
           "cpu_seconds_spectrum": end_cpu - marks["traces_done_cpu"],
           "products": result.num_hvps, "converged": result.converged, "top_eigenvalues": result.top_eigenvalues,
           "trace": result.trace, "trace_stderr": result.trace_stderr, "linear_layers": len(linear), "worst_rel_95": worst,
           "ritz_history": ritz_history(runs[0].alphas.tolist(), runs[0].betas.tolist(), 6) if runs else [],
           "peak_rss_gb_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
           "load_average_after": os.getloadavg()}
    print({k: v for k, v in row.items() if k != "ritz_history"}, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 4, 8], help="vectors per pass")
    parser.add_argument("--minilm-samples", type=int, default=0, help="also MiniLM on this many sentences")
    parser.add_argument("--minilm-k", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--minilm-defaults", action="store_true",
                        help="instead: MiniLM curvature with defaults, token batching on vs off")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.minilm_defaults:
        report = {"threads": 1, "load_average": os.getloadavg(),
                  "runs": [minilm_defaults(batching=True), minilm_defaults(batching=False)]}
        if args.json:
            write_json(args.json, report)
        return
    report = {"threads": 1, "load_average": os.getloadavg(), "nets": [small_net(args.repeats, args.k)]}
    if args.minilm_samples:
        report["nets"].append(minilm(args.minilm_samples, max(1, args.repeats // 2), args.minilm_k))
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
