"""Exact Hessian vs estimators on a small MNIST net: the comparison PyHessian and BackPACK users make.

Net: 7x7 average-pooled MNIST digits -> Linear(49,16) tanh -> Linear(16,10), 970 parameters,
trained on the mnist5k train split; curvature of the cross-entropy over 1,000 training digits.
Rows: dense float64 Hessian (exact); ours (compress.curvature.estimate_curvature); PyHessian 0.1
(Hutchinson trace with its own stopping rule, power iteration); the exact diagonal of the
Gauss-Newton matrix (BackPACK's DiagGGN), whose sum is Tr(GGN) and whose largest entry is
what a diagonal approximation offers for λ_max.

Run: python benchmarks/curvature_reference.py [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from compress.curvature.estimate import CurvatureSpec, estimate_curvature
from compress.data.source import TensorData
from compress.data.spec import load_data
from compress.jsonio import write_json


def small_mnist_net_and_data(samples: int, activation: type[nn.Module] = nn.Tanh) -> tuple[nn.Module, TensorData]:
    train = load_data("builtin:mnist5k", "train", "train")
    inputs = nn.functional.avg_pool2d(train.inputs[0], 4).flatten(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(49, 16), activation(), nn.Linear(16, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        loss = nn.functional.cross_entropy(model(inputs), train.targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), TensorData("mnist-7x7", (inputs[:samples],), train.targets[:samples])


def diagonal_ggn(model: nn.Module, data: TensorData) -> torch.Tensor:
    """diag(G) = (1/N) Σ_n diag(J_nᵀ (diag(p_n) − p_n p_nᵀ) J_n), from exact per-sample Jacobians."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def logits(p: dict, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, p, (x[None],))[0]

    jacobians = torch.func.vmap(torch.func.jacrev(logits), in_dims=(None, 0))(params, data.inputs[0])
    jacobian = torch.cat([j.flatten(2) for j in jacobians.values()], dim=2)  # (N, C, D)
    probabilities = torch.softmax(model(data.inputs[0]), dim=1).detach()
    weighted = torch.einsum("nc,ncd->nd", probabilities, jacobian**2)
    mean_part = torch.einsum("nc,ncd->nd", probabilities, jacobian) ** 2
    return (weighted - mean_part).mean(dim=0)


def run_pyhessian(model: nn.Module, data: TensorData) -> dict:
    from pyhessian import hessian

    start = time.perf_counter()
    engine = hessian(model, nn.CrossEntropyLoss(), data=(data.inputs[0], data.targets), cuda=False)
    samples = engine.trace()
    top, _ = engine.eigenvalues(top_n=1)
    return {"trace": float(sum(samples) / len(samples)), "top_eigenvalue": float(top[0]),
            "seconds": time.perf_counter() - start, "products": f"{len(samples)} (trace) + power iterations"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model, data = small_mnist_net_and_data(args.samples)
    exact = estimate_curvature(model, data, CurvatureSpec(exact=True, batch_size=args.samples))
    ours = estimate_curvature(model, data, CurvatureSpec(batch_size=args.samples))
    start = time.perf_counter()
    diagonal = diagonal_ggn(model, data)
    diagonal_seconds = time.perf_counter() - start
    rows = {
        "exact (dense float64)": {"trace": exact.trace, "top_eigenvalue": exact.top_eigenvalues[0],
                                  "seconds": exact.seconds, "products": "dense"},
        "ours": {"trace": ours.trace, "trace_stderr": ours.trace_stderr, "top_eigenvalue": ours.top_eigenvalues[0],
                 "seconds": ours.seconds, "products": ours.num_hvps},
        "pyhessian 0.1": run_pyhessian(model, data),
        "diagonal GGN (BackPACK-style)": {"trace": float(diagonal.sum()), "top_eigenvalue": float(diagonal.max()),
                                          "seconds": diagonal_seconds, "products": "per-sample Jacobians"},
    }
    for row in rows.values():
        row["trace_rel_error"] = abs(row["trace"] - exact.trace) / abs(exact.trace)
        row["top_eigenvalue_rel_error"] = abs(row["top_eigenvalue"] - exact.top_eigenvalues[0]) / exact.top_eigenvalues[0]
    print("| method | trace | rel. error | top eigenvalue | rel. error | seconds | products |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['trace']:.4f} | {row['trace_rel_error']:.2%} | {row['top_eigenvalue']:.4f} | "
              f"{row['top_eigenvalue_rel_error']:.2%} | {row['seconds']:.2f} | {row['products']} |")
    if args.json:
        write_json(args.json, rows)


if __name__ == "__main__":
    main()
