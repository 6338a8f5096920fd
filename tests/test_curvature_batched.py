"""Batched curvature products (k vectors in one pass) against one-at-a-time products and dense
float64 references; Lanczos runs in lockstep; the Gauss-Newton spectrum through its Gram matrix."""

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from compress.curvature.estimate import CurvatureSpec, estimate_curvature
from compress.curvature.exact import dense_hessian
from compress.curvature.gram import gram_applies, gram_lanczos, output_size, spectral_density
from compress.curvature.lanczos import lanczos, lanczos_runs
from compress.curvature.memory import probes_per_pass
from compress.curvature.prepare import prepare_operator
from compress.curvature.trace import TraceSpec
from compress.testing.tiny import tiny_convnet, tiny_data, tiny_mlp

TINY = {"mlp": tiny_mlp, "conv": tiny_convnet}


def float64_operator(name: str, loss: str = "ce", num_samples: int = 48, batch_size: int = 20):
    model = TINY[name]().double().eval()
    data = tiny_data(name, num_samples=num_samples)
    data = type(data)(data.name, tuple(x.double() for x in data.inputs), data.targets)
    return prepare_operator(model, data, loss, batch_size=batch_size)


def dense_jacobian(operator) -> torch.Tensor:
    """All outputs of the data (stacked over batches) by all weights, float64: M x D."""
    layout = operator.layout
    flat = layout.flatten(operator.params)
    rows = []
    for batch in operator.batches:
        outputs = lambda v: functional_call(operator.model, {**layout.unflatten(v), **operator.constants},
                                            batch.inputs)
        rows.append(jacrev(outputs)(flat).reshape(-1, layout.dim))
    return torch.cat(rows)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("product", ["reverse-over-reverse", "forward-over-reverse", "ggn"])
def test_batched_products_equal_one_at_a_time_and_dense(name: str, product: str) -> None:
    operator = float64_operator(name, loss="distill" if product == "ggn" else "ce")
    operator.product = product
    hessian = dense_hessian(operator.model, operator.batches, operator.references, operator.loss,
                            operator.total_samples)
    vectors = torch.randn(3, operator.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batched = operator.matmat(vectors)
    single = torch.stack([operator.matvec(v) for v in vectors])
    scale = hessian.abs().max().item()
    assert (batched - single).abs().max().item() < 1e-12 * scale
    assert (batched - vectors @ hessian).abs().max().item() < 1e-10 * scale
    assert operator.num_products == 6


@pytest.mark.parametrize("name", TINY)
def test_batched_pull_back_is_the_jacobian_transpose(name: str) -> None:
    operator = float64_operator(name, loss="distill")
    jacobian = dense_jacobian(operator)
    start = 0
    for index, reference in enumerate(operator.references):
        directions = torch.randn(4, *reference.shape, dtype=torch.float64)
        rows = jacobian[start : start + reference.numel()]
        start += reference.numel()
        pulled = operator.pull_back(index, directions)
        assert torch.allclose(pulled, directions.flatten(1) @ rows, rtol=1e-10, atol=1e-12)
        assert torch.allclose(pulled[1], operator.pull_back(index, directions[1:2])[0], rtol=1e-12, atol=1e-14)


def test_lanczos_runs_in_lockstep_equal_separate_runs() -> None:
    generator = torch.Generator().manual_seed(1)
    matrix = torch.randn(40, 40, generator=generator, dtype=torch.float64)
    matrix = matrix @ matrix.T
    low_rank = matrix[:, :3] @ matrix[:, :3].T
    starts = torch.randn(3, 40, generator=generator, dtype=torch.float64)
    for operator in (matrix, low_rank):  # low rank: runs stop early, the others continue
        together = lanczos_runs(lambda block: block @ operator, starts, 20)
        for start, run in zip(starts, together):
            alone = lanczos(lambda v: operator @ v, start, 20)
            assert len(run.alphas) == len(alone.alphas) and len(run.betas) == len(alone.betas)
            assert np.allclose(run.alphas, alone.alphas) and np.allclose(run.betas, alone.betas)


@pytest.mark.parametrize("name", TINY)
def test_gram_lanczos_gives_the_gauss_newton_spectrum(name: str) -> None:
    operator = float64_operator(name, loss="distill", num_samples=14, batch_size=6)
    assert output_size(operator) < operator.dim and gram_applies(operator, "distill")
    assert not gram_applies(operator, "ce")
    jacobian = dense_jacobian(operator)
    ggn = jacobian.T @ jacobian / operator.total_samples
    exact = torch.linalg.eigvalsh(ggn).numpy()[::-1]
    runs, share = gram_lanczos(operator, runs=2, steps=output_size(operator), seed=0)
    density = spectral_density(runs, share)
    assert operator.num_products == 2 * len(runs[0].alphas)
    for run in runs:
        top = np.sort(run.ritz()[0])[::-1][:5]
        assert np.allclose(top, exact[:5], rtol=1e-8)
    assert abs(density.weights.sum() - 1) < 1e-12
    # quadrature over a full Krylov space is exact: moment p = (M/D) · mean_r v_rᵀ K^p v_r / v_rᵀ v_r
    gram = jacobian @ jacobian.T / operator.total_samples
    starts = torch.randn(2, len(gram), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert share == len(gram) / operator.dim
    for power in (1, 2):
        quadratic = ((starts @ torch.linalg.matrix_power(gram, power)) * starts).sum(1) / (starts**2).sum(1)
        assert density.moment(power) == pytest.approx(share * float(quadratic.mean()), rel=1e-8)
    assert density.share(-1e-12, 1e-12) >= 1 - share


def test_distill_default_uses_batched_probes_and_the_gram_spectrum() -> None:
    model = tiny_convnet().eval()
    data = tiny_data("conv", num_samples=40)
    exact = estimate_curvature(model, data, CurvatureSpec(loss="distill", exact=True))
    spec = CurvatureSpec(loss="distill", batch_size=8, probes_per_pass=4, trace=TraceSpec(rel_error=0.2))
    ours = estimate_curvature(model, data, spec)
    assert ours.method.startswith("gauss-newton") and ours.converged
    errors = np.abs(np.array(ours.top_eigenvalues) - exact.top_eigenvalues) / np.array(exact.top_eigenvalues)
    assert errors.max() < 1e-4, errors
    for name, layer in ours.layers.items():
        assert abs(layer.trace - exact.layers[name].trace) <= 0.2 * abs(exact.layers[name].trace)


def test_probes_per_pass_fits_the_memory_budget() -> None:
    assert probes_per_pass(1000, budget_bytes=1e15, most=8) == 8
    assert probes_per_pass(1000, budget_bytes=0, most=8) == 1
    assert probes_per_pass(10**12, budget_bytes=1e13, most=8) == 1
