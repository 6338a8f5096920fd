"""The curvature approximation table: exact dense Hessian vs our estimators vs the peers, side by side.

Nets (``benchmarks/curvature_reference.py``): 7x7 average-pooled MNIST digits -> Linear(49,16) ->
ReLU or tanh -> Linear(16,10), 970 parameters, trained on the mnist5k train split; the curvature
of the mean cross-entropy over 1,000 training digits, in float64 (PyHessian: float32, it draws
float32 probes). Rows:

- exact Hessian and exact Gauss-Newton matrix (dense float64; the GGN from per-sample Jacobians);
- ours: ``estimate_curvature`` defaults (Hutchinson with Lanczos deflation), Gauss-Newton traces
  (output-space probes), K-FAC (sampled labels) and KFLR (exact output factor);
- PyHessian (Hutchinson trace, power-iteration top eigenvalues);
- BackPACK: DiagHessian, DiagGGN exact and MC, KFAC, KFLR, KFRA (weight and bias as separate blocks);
- curvlinops: KFAC with sampled labels (``mc``) and with the exact output Hessian (``type-2``).

Columns: whole-model trace error, per-layer trace errors, top-10 eigenvalue errors (diagonal and
Kronecker rows: the eigenvalues of their diagonal / block-diagonal matrix), seconds. All errors are
relative to the exact Hessian. A peer that fails gets its one-line reason.

Run: PYTHONPATH=$PWD:/tmp/h-kfac-peers OMP_NUM_THREADS=1 python benchmarks/curvature_approximations.py \
         --json benchmarks/results/curvature_approximations.json --plot benchmarks/results/curvature_approximations.png
(peers: pip install --no-deps --target /tmp/h-kfac-peers backpack-for-pytorch curvlinops-for-pytorch
 einops unfoldNd einconv linear_operator opt-einsum)
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curvature_reference import small_mnist_net_and_data  # noqa: E402

from compress.curvature.estimate import CurvatureSpec, estimate_curvature  # noqa: E402
from compress.curvature.result import Curvature  # noqa: E402
from compress.data.source import TensorData  # noqa: E402
from compress.jsonio import write_json  # noqa: E402

TOP = 10


@dataclass
class Row:
    """One method's figures on one net (``failure``: why it gave none)."""

    method: str
    trace: float | None = None
    layers: dict[str, float] = field(default_factory=dict)
    top: list[float] = field(default_factory=list)
    seconds: float | None = None
    failure: str | None = None


def timed(method: str, run: Callable[[], tuple[float, dict[str, float], list[float]]]) -> Row:
    """Run one method; a peer's exception becomes its one-line reason (this is a benchmark)."""
    start = time.perf_counter()
    try:
        trace, layers, top = run()
    except Exception as exc:  # noqa: BLE001 - any failure of a peer is a result to report
        return Row(method, failure=f"{type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}")
    return Row(method, trace, layers, top, time.perf_counter() - start)


def from_curvature(result: Curvature) -> tuple[float, dict[str, float], list[float]]:
    return result.trace, {name: layer.trace for name, layer in result.layers.items()}, list(result.top_eigenvalues)


def from_dense(matrix: torch.Tensor, model: nn.Module) -> tuple[float, dict[str, float], list[float]]:
    """Trace, per-layer traces (by owning module) and top eigenvalues of a D x D matrix over the
    parameters in ``named_parameters`` order."""
    diagonal, layers, offset = matrix.diagonal(), {}, 0
    for name, param in model.named_parameters():
        layer = name.rsplit(".", 1)[0]
        layers[layer] = layers.get(layer, 0.0) + float(diagonal[offset:offset + param.numel()].sum())
        offset += param.numel()
    top = torch.linalg.eigvalsh(matrix).flip(0)[:TOP]
    return float(diagonal.sum()), layers, top.tolist()


def dense_ggn(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """(1/N) Σ_n J_nᵀ (diag p_n − p_n p_nᵀ) J_n from exact per-sample Jacobians, float64."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def logits(p: dict, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, p, (x[None],))[0]

    jacobians = torch.func.vmap(torch.func.jacrev(logits), in_dims=(None, 0))(params, inputs)
    jacobian = torch.cat([j.flatten(2) for j in jacobians.values()], dim=2)
    p = torch.softmax(model(inputs), dim=1).detach()
    weighted = torch.einsum("nc,ncd->ncd", p, jacobian)
    mean = torch.einsum("nc,ncd->nd", p, jacobian)
    return (torch.einsum("ncd,nce->de", weighted, jacobian) - torch.einsum("nd,ne->de", mean, mean)) / len(inputs)


def backpack_rows(model: nn.Module, data: TensorData) -> list[Row]:
    from backpack import backpack, extend
    from backpack.extensions import KFAC, KFLR, KFRA, DiagGGNExact, DiagGGNMC, DiagHessian

    def run(extension, attribute: str, kronecker: bool):
        def compute():
            extended = extend(copy.deepcopy(model))
            loss = extend(nn.CrossEntropyLoss())(extended(data.inputs[0]), data.targets)
            with backpack(extension):
                loss.backward()
            params = list(extended.parameters())
            blocks = [_kronecker(getattr(p, attribute)) if kronecker else torch.diag(getattr(p, attribute).flatten())
                      for p in params]
            return from_dense(torch.block_diag(*blocks), extended)
        return compute

    return [timed("BackPACK DiagHessian", run(DiagHessian(), "diag_h", False)),
            timed("BackPACK DiagGGN exact", run(DiagGGNExact(), "diag_ggn_exact", False)),
            timed("BackPACK DiagGGN MC (1 sample)", run(DiagGGNMC(mc_samples=1), "diag_ggn_mc", False)),
            timed("BackPACK KFAC (1 sample)", run(KFAC(mc_samples=1), "kfac", True)),
            timed("BackPACK KFLR", run(KFLR(), "kflr", True)),
            timed("BackPACK KFRA", run(KFRA(), "kfra", True))]


def _kronecker(factors: list[torch.Tensor]) -> torch.Tensor:
    block = factors[0]
    for factor in factors[1:]:
        block = torch.kron(block, factor)
    return block


def curvlinops_rows(model: nn.Module, data: TensorData) -> list[Row]:
    from curvlinops import KFACLinearOperator

    def run(fisher: str, separate: bool = True):
        def compute():
            params = [p for p in model.parameters() if p.requires_grad]
            operator = KFACLinearOperator(model, nn.CrossEntropyLoss(), params, [(data.inputs[0], data.targets)],
                                          fisher_type=fisher, mc_samples=1, check_deterministic=False,
                                          separate_weight_and_bias=separate)
            dimension = sum(p.numel() for p in params)
            return from_dense(operator @ torch.eye(dimension, dtype=torch.float64), model)
        return compute

    return [timed("curvlinops KFAC (mc, 1 sample)", run("mc")), timed("curvlinops KFAC (type-2 = KFLR)", run("type-2")),
            timed("curvlinops KFAC (type-2, weight+bias joint)", run("type-2", separate=False))]


def pyhessian_row(model: nn.Module, data: TensorData) -> Row:
    def compute():
        from pyhessian import hessian

        engine = hessian(model.float(), nn.CrossEntropyLoss(), data=(data.inputs[0].float(), data.targets), cuda=False)
        samples = engine.trace()
        top, _ = engine.eigenvalues(top_n=TOP)
        return float(sum(samples) / len(samples)), {}, sorted((float(v) for v in top), reverse=True)

    return timed("PyHessian 0.1 (float32)", compute)


def compare(activation: type[nn.Module], samples: int) -> tuple[Row, list[Row]]:
    torch.manual_seed(0)
    model, data = small_mnist_net_and_data(samples, activation)
    model = model.double().eval()
    data = TensorData(data.name, (data.inputs[0].double(),), data.targets)
    whole = dict(batch_size=samples, top_k=TOP)
    exact = timed("exact Hessian (dense float64)",
                  lambda: from_curvature(estimate_curvature(model, data, CurvatureSpec(exact=True, **whole))))
    rows = [timed("exact GGN (dense float64)", lambda: from_dense(dense_ggn(model, data.inputs[0]), model))]
    for method, label in (("hutchinson", "ours: default (Hutchinson, deflated)"),
                          ("gauss-newton", "ours: Gauss-Newton probes"),
                          ("kfac", "ours: K-FAC (2 samples)"), ("kflr", "ours: KFLR")):
        rows.append(timed(label, lambda m=method: from_curvature(
            estimate_curvature(model, data, CurvatureSpec(method=m, **whole)))))
    rows.append(pyhessian_row(copy.deepcopy(model), data))
    rows += backpack_rows(model, data)
    rows += curvlinops_rows(model, data)
    return exact, rows


def errors(row: Row, exact: Row) -> dict[str, object]:
    """Relative errors against the exact Hessian (None where the method gives no figure)."""
    def rel(value, reference):
        return None if value is None else (value - reference) / abs(reference)

    top = [rel(v, e) for v, e in zip(row.top, exact.top)]
    return {"trace": rel(row.trace, exact.trace),
            "layers": {name: rel(row.layers.get(name), value) for name, value in exact.layers.items()},
            "top1": top[0] if top else None,
            "top10_max_abs": max(abs(t) for t in top) if len(top) == TOP else None}


def markdown(net: str, exact: Row, rows: list[Row]) -> list[str]:
    names = list(exact.layers)
    lines = [f"| {net} | trace | err. | " + " | ".join(f"layer {n} err." for n in names)
             + " | λ₁ err. | max top-10 err. | seconds |", "|---" * (6 + len(names)) + "|",
             f"| exact Hessian | {exact.trace:.4f} | — | " + " | ".join("—" for _ in names)
             + f" | λ₁ = {exact.top[0]:.4f} | — | {exact.seconds:.2f} |"]
    for row in rows:
        if row.failure:
            lines.append(f"| {row.method} | fails: {row.failure} |" + " |" * (4 + len(names)))
            continue
        e = errors(row, exact)
        lines.append(f"| {row.method} | {row.trace:.4f} | {_pct(e['trace'])} | "
                     + " | ".join(_pct(e["layers"][n]) for n in names)
                     + f" | {_pct(e['top1'])} | {_pct(e['top10_max_abs'])} | {row.seconds:.2f} |")
    return lines


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:+.1f}%"


def plot(results: dict[str, tuple[Row, list[Row]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 5.5))
    for axis, (net, (exact, rows)) in zip(axes, results.items()):
        axis.semilogy(range(1, TOP + 1), exact.top, "k-", linewidth=3, label=exact.method)
        for index, row in enumerate(rows):
            if row.top:
                style = "-" if row.method.startswith("ours") else "--" if row.method.startswith("BackPACK") else ":"
                axis.semilogy(range(1, len(row.top) + 1), row.top, style, marker="o", markersize=3, linewidth=1.2,
                              color=plt.cm.tab20(index % 20), label=row.method)
        axis.set_title(f"{net}: top {TOP} eigenvalues")
        axis.set_xlabel("rank")
        axis.set_ylabel("eigenvalue")
        axis.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def mnist_cnn_layers(samples: int) -> list[str]:
    """Per-layer traces of builtin:mnist-cnn (ReLU, eval-mode BatchNorm, a depthwise conv): there each
    layer's Hessian block equals its Gauss-Newton block (DESIGN §7), so Gauss-Newton probes run to
    ±2% are the reference (and Lanczos gives the Hessian's λ₁); K-FAC and KFLR beside them, with their seconds."""
    from scipy.stats import spearmanr

    from compress.curvature.trace import Z95, TraceSpec
    from compress.data.spec import load_data
    from compress.models.spec import build_model

    model = build_model("builtin:mnist-cnn").eval()
    data = load_data("builtin:mnist5k", "train", "train").subset(range(samples), f"mnist5k[train][:{samples}]")
    reference_spec = CurvatureSpec(method="gauss-newton", slq_runs=1, top_k=TOP,
                                   trace=TraceSpec(rel_error=0.02, max_products=800, deflation_steps=0))
    start = time.perf_counter()
    reference = estimate_curvature(model, data, reference_spec)
    seconds = {"gauss-newton ±2%": time.perf_counter() - start}
    kronecker = {}
    for method in ("kfac", "kflr"):
        start = time.perf_counter()
        kronecker[method] = estimate_curvature(model, data, CurvatureSpec(method=method, top_k=TOP))
        seconds[method] = time.perf_counter() - start
    names = list(kronecker["kflr"].layers)
    lines = ["| layer | params | Gauss-Newton trace (±95%) | K-FAC (±95%) | KFLR | K-FAC / GN | KFLR / GN |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        ref, kfac = reference.layers[name], kronecker["kfac"].layers[name]
        kflr = kronecker["kflr"].layers[name].trace
        lines.append(f"| {name} | {ref.num_params:,} | {ref.trace:.4g} ± {Z95 * ref.trace_stderr:.2g} | "
                     f"{kfac.trace:.4g} ± {Z95 * kfac.trace_stderr:.2g} | {kflr:.4g} | {kfac.trace / ref.trace:.2f} | "
                     f"{kflr / ref.trace:.2f} |")
    for method, result in kronecker.items():
        ranks = spearmanr([reference.layers[n].trace for n in names], [result.layers[n].trace for n in names])
        per_param = spearmanr([reference.layers[n].trace / reference.layers[n].num_params for n in names],
                              [result.layers[n].trace / result.layers[n].num_params for n in names])
        lines.append(f"\n{method}: Spearman ρ vs Gauss-Newton over the {len(names)} layers: trace "
                     f"{ranks.statistic:.2f}, trace per parameter {per_param.statistic:.2f}; "
                     f"{result.num_hvps} backward passes, {seconds[method]:.2f} s")
    lines.append(f"\nGauss-Newton probes to ±2%: {reference.num_hvps} probes, {seconds['gauss-newton ±2%']:.1f} s; "
                 f"Hessian λ₁ (Lanczos, 30 products) {reference.top_eigenvalues[0]:.4g}; K-FAC λ₁ "
                 f"{kronecker['kfac'].top_eigenvalues[0]:.4g}, KFLR λ₁ {kronecker['kflr'].top_eigenvalues[0]:.4g}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--part", choices=("mlps", "mnist-cnn"), default="mlps",
                        help="the table on the two MLPs, or per-layer K-FAC vs Gauss-Newton on builtin:mnist-cnn")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.part == "mnist-cnn":
        print("\n".join(mnist_cnn_layers(args.samples)))
        return
    results = {f"{a.__name__} MLP": compare(a, args.samples) for a in (nn.ReLU, nn.Tanh)}
    for net, (exact, rows) in results.items():
        print("\n".join(markdown(net, exact, rows)) + "\n")
    if args.json:
        write_json(args.json, {net: {"exact": asdict(exact), "rows": [{**asdict(r), "errors": errors(r, exact)}
                                                                     for r in rows if not r.failure] +
                                     [asdict(r) for r in rows if r.failure]}
                               for net, (exact, rows) in results.items()})
    if args.plot:
        plot(results, Path(args.plot))


if __name__ == "__main__":
    main()
