"""CPU seconds of one output-space Gram product K u = J(Jᵀu)/N and of one trace probe on
builtin:minilm over all of builtin:sentences, before and after the tangent-only forward pass,
side by side in one process.

Before (the products as of the token-batching change): Jᵀu by one backward pass per batch, each
flattened to a 22.7M-entry vector and summed; J v by ``vmap``-ed ``torch.func.jvp``, which
recomputes the primal forward pass every time; a probe's per-layer ‖(J_bᵀu_b)_i‖² from the flat
vector in float64. After: one backward pass over all batches accumulating per-parameter
gradients (``CurvatureOperator.pull_back_all``), J v by forward-mode AD that takes every linear
layer's primal output from a per-batch cache (``compress.curvature.tangents``), and the probe's
squared norms per parameter (``ParamLayout.block_squared_norms``). The parts are timed
separately and the results compared. With ``--batch-sizes``, instead the products after the
change at those batch sizes. The ways are alternated, ``--repeats`` rounds after one warm-up
round; medians of CPU seconds (``time.process_time``), one torch thread, the load average named.

Run: OMP_NUM_THREADS=1 python benchmarks/curvature_gram_cost.py [--repeats 3] [--json out.json]
     OMP_NUM_THREADS=1 python benchmarks/curvature_gram_cost.py --batch-sizes 32 16 [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from typing import Callable

import torch
from torch.func import jvp, vmap

from compress.curvature.gram import gram_matmat, output_size
from compress.curvature.operator import CurvatureOperator, _math_attention
from compress.jsonio import write_json


def before_pull_back(operator: CurvatureOperator, pieces: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Σ_b J_bᵀ u_b as before: a flat vector per batch, summed, then split per parameter."""
    return operator.unflatten_batched(sum(operator.pull_back(index, piece) for index, piece in enumerate(pieces)))


def before_push_forward(operator: CurvatureOperator, tangents: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """J_b v per batch as before: ``vmap`` over the tangents of ``torch.func.jvp`` (primal recomputed)."""
    pushed = []
    for batch in operator.batches:
        outputs = vmap(lambda t: jvp(lambda p: operator._forward(p, batch), (operator.params,), (t,)),
                       out_dims=(None, 0))
        with _math_attention():
            pushed.append(outputs(tangents)[1])
    return pushed


def before_probe(operator: CurvatureOperator, directions: list[torch.Tensor]) -> torch.Tensor:
    """Per-batch, per-layer ‖(J_bᵀ u_b)_i‖² as before: a flat vector per batch, squared in float64."""
    return torch.stack([operator.layout.block_dots(pulled[0], pulled[0])
                        for pulled in (operator.pull_back(index, u) for index, u in enumerate(directions))])


def after_probe(operator: CurvatureOperator, directions: list[torch.Tensor]) -> torch.Tensor:
    """The same per parameter (``gauss_newton._probe_samples``): no flat copies."""
    return torch.cat([operator.layout.block_squared_norms(operator.pull_back_params(index, u), 1)
                      for index, u in enumerate(directions)])


def after_push_forward(operator: CurvatureOperator, tangents: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [operator.push_forward(index, tangents)[1] for index in range(len(operator.batches))]


def cpu_seconds(function: Callable[[], object]) -> tuple[float, object]:
    """(CPU seconds, result) of one call."""
    cpu = time.process_time()
    result = function()
    return time.process_time() - cpu, result


def minilm_operator(batch_size: int | None) -> CurvatureOperator:
    """builtin:minilm over all of builtin:sentences with its forward graphs built; batch size of
    the stage (``curvature_batch_size``) when None."""
    from compress.curvature.batching import curvature_batch_size
    from compress.curvature.prepare import prepare_operator
    from compress.data.spec import load_data
    from compress.models.spec import build_model

    model = build_model("builtin:minilm").eval()
    data = load_data("builtin:sentences", None, "train")
    operator = prepare_operator(model, data, "distill", batch_size or curvature_batch_size(data, 128))
    for index in range(len(operator.batches)):
        operator.output(index)
    return operator


def output_pieces(operator: CurvatureOperator, seed: int) -> list[torch.Tensor]:
    """One random output-space vector, split per batch (1 x batch output each)."""
    shapes = [reference.shape for reference in operator.references]
    vector = torch.randn(1, output_size(operator), generator=torch.Generator().manual_seed(seed))
    return [piece.view(1, *shape) for piece, shape in zip(vector.split([s.numel() for s in shapes], dim=1), shapes)]


def gram_halves(operator: CurvatureOperator, pieces: list[torch.Tensor], before: bool) -> dict[str, Callable]:
    """The timed parts of one Gram product and one trace probe, before or after."""
    pull = (lambda: before_pull_back(operator, pieces)) if before else (lambda: operator.pull_back_all(pieces))
    push = before_push_forward if before else after_push_forward
    probe = before_probe if before else after_probe
    return {"pull_back": pull, "push_forward": lambda tangents: push(operator, tangents),
            "probe": lambda: probe(operator, pieces)}


def alternate(ways: dict[str, dict[str, Callable]], repeats: int) -> tuple[dict, dict]:
    """CPU seconds of each way's parts, the ways alternated, ``repeats`` rounds after a warm-up
    round: ({way: {part: [seconds]}}, {way: last Gram product and probe samples})."""
    times = {way: {"pull_back": [], "push_forward": [], "product": [], "probe": []} for way in ways}
    results = {}
    for repeat in range(repeats + 1):  # the warm-up round fills the primal caches
        for way, parts in ways.items():
            pull_cpu, tangents = cpu_seconds(parts["pull_back"])
            push_cpu, pushed = cpu_seconds(lambda: parts["push_forward"](tangents))
            probe_cpu, samples = cpu_seconds(parts["probe"])
            results[way] = (torch.cat([p.reshape(1, -1) for p in pushed], dim=1), samples)
            if repeat:
                for key, value in (("pull_back", pull_cpu), ("push_forward", push_cpu),
                                   ("product", pull_cpu + push_cpu), ("probe", probe_cpu)):
                    times[way][key].append(value)
        print({way: {k: round(v[-1], 2) for k, v in t.items() if v} for way, t in times.items()}, os.getloadavg(),
              flush=True)
    return times, results


def cache_bytes(operator: CurvatureOperator) -> int:
    """Bytes held by the push-forward caches: (value, versions) entries, a value a tensor or a tuple."""
    values = [value for cache in operator._primals.values() for value, _ in cache]
    return sum(t.numel() * t.element_size() for v in values for t in (v if isinstance(v, tuple) else (v,)))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[],
                        help="instead: the products after the change at these batch sizes, alternated")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    if args.batch_sizes:
        operators = {f"batch {size}": minilm_operator(size) for size in args.batch_sizes}
        ways = {way: gram_halves(operator, output_pieces(operator, 0), before=False)
                for way, operator in operators.items()}
    else:
        operator = minilm_operator(None)
        pieces = output_pieces(operator, 0)
        ways = {"before": gram_halves(operator, pieces, before=True),
                "after": gram_halves(operator, pieces, before=False)}
    times, results = alternate(ways, args.repeats)
    medians = {way: {key: statistics.median(values) for key, values in t.items()} for way, t in times.items()}
    first, second = list(ways)[:2]
    report = {
        "model": "builtin:minilm", "data": "builtin:sentences", "threads": 1, "repeats": args.repeats,
        "batches": {way: len(o.batches) for way, o in (operators.items() if args.batch_sizes else [("stage", operator)])},
        "cpu_seconds_median": medians, "cpu_seconds_all": times,
        "ratios": {key: medians[first][key] / medians[second][key] for key in medians[first]},
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
    }
    if not args.batch_sizes:
        (before_product, before_probe_samples), (after_product, after_probe_samples) = results["before"], results["after"]
        report["relative_difference"] = {"gram_product": relative(after_product, before_product),
                                         "probe_samples": relative(after_probe_samples, before_probe_samples)}
        report["relative_difference_gram_matmat"] = relative(
            gram_matmat(operator)(torch.cat([p.reshape(1, -1) for p in pieces], dim=1)),
            after_product / operator.total_samples)
        report["cached_primal_gb"] = cache_bytes(operator) / 1e9
    print({k: v for k, v in report.items() if k != "cpu_seconds_all"}, flush=True)
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
