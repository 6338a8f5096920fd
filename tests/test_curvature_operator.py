"""Curvature products against dense float64 references on tiny smooth networks."""

import pytest
import torch

from compress.curvature.exact import dense_hessian
from compress.curvature.lanczos import lanczos
from compress.curvature.prepare import prepare_operator
from compress.errors import InputError
from compress.testing.tiny import tiny_convnet, tiny_data, tiny_mlp

TINY = {"mlp": tiny_mlp, "conv": tiny_convnet}


def float64_setup(name: str, loss: str = "ce", batch_size: int = 20):
    """A float64 tiny net with 48 samples in unequal batches (20, 20, 8), its operator and dense H."""
    model = TINY[name]().double().eval()
    data = tiny_data(name)
    data = type(data)(data.name, tuple(x.double() for x in data.inputs), data.targets)
    operator = prepare_operator(model, data, loss, batch_size=batch_size)
    hessian = dense_hessian(model, operator.batches, operator.references, operator.loss, operator.total_samples)
    return operator, hessian


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("product, reuse", [("forward-over-reverse", False), ("reverse-over-reverse", False),
                                            ("reverse-over-reverse", True)])
def test_hessian_vector_product_equals_dense(name: str, product: str, reuse: bool) -> None:
    operator, hessian = float64_setup(name)
    operator.product, operator.reuse_graphs = product, reuse
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):  # the second product runs through kept graphs when reuse is on
        vector = torch.randn(operator.dim, generator=generator, dtype=torch.float64)
        error = (operator.matvec(vector) - hessian @ vector).abs().max().item()
        assert error < 1e-10 * hessian.abs().max().item(), f"max error {error}"
    assert operator.num_products == 2 and len(operator._graphs) == (3 if reuse else 0)


def test_whole_dataset_hessian_does_not_depend_on_batching() -> None:
    one, _ = float64_setup("conv", batch_size=48)
    three, _ = float64_setup("conv", batch_size=20)
    vector = torch.randn(one.dim, dtype=torch.float64)
    assert torch.allclose(one.matvec(vector), three.matvec(vector), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", TINY)
def test_distillation_hessian_is_the_gauss_newton_matrix(name: str) -> None:
    operator, hessian = float64_setup(name, loss="distill")
    operator.product = "ggn"
    vector = torch.randn(operator.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(operator.matvec(vector), hessian @ vector, rtol=1e-9, atol=1e-12)


def test_gauss_newton_product_equals_dense_jacobian_form() -> None:
    operator, _ = float64_setup("mlp")
    operator.product = "ggn"
    model, layout = operator.model, operator.layout
    params = {n: p.detach() for n, p in model.named_parameters()}
    flat = layout.flatten(params)
    expected = torch.zeros(layout.dim, layout.dim, dtype=torch.float64)
    for batch, targets in zip(operator.batches, operator.references):
        def outputs(vector: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(model, layout.unflatten(vector), batch.inputs)

        jacobian = torch.func.jacrev(outputs)(flat)  # (B, C, D)
        logits = outputs(flat).detach()
        for b in range(len(batch)):
            output_hessian = torch.func.hessian(
                lambda z: torch.nn.functional.cross_entropy(z[None], targets[b : b + 1]))(logits[b])
            expected += jacobian[b].T @ output_hessian @ jacobian[b] / operator.total_samples
    vector = torch.randn(layout.dim, dtype=torch.float64)
    assert torch.allclose(operator.matvec(vector), expected @ vector, rtol=1e-9, atol=1e-12)


def test_lanczos_finds_the_top_eigenvalues_and_stops_on_invariant_spaces() -> None:
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(50, 50, generator=generator, dtype=torch.float64))
    eigenvalues = torch.cat([torch.tensor([100.0, 50.0, 20.0, 10.0, 5.0]), torch.rand(45, generator=generator)])
    matrix = basis @ torch.diag(eigenvalues.double()) @ basis.T
    result = lanczos(lambda v: matrix @ v, torch.randn(50, dtype=torch.float64, generator=generator), 30)
    ritz = sorted(result.ritz()[0], reverse=True)[:5]
    assert max(abs(r - e) / e for r, e in zip(ritz, [100.0, 50.0, 20.0, 10.0, 5.0])) < 1e-8
    low_rank = basis[:, :3] @ torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)) @ basis[:, :3].T
    short = lanczos(lambda v: low_rank @ v, torch.randn(50, dtype=torch.float64, generator=generator), 30)
    # the Krylov space of a rank-3 matrix from a generic start has dimension 4 (start + range)
    assert len(short.alphas) == 4 and abs(short.basis @ short.basis.T - torch.eye(4, dtype=torch.float64)).max() < 1e-12


def test_nondeterministic_models_are_refused() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    data = tiny_data("mlp")
    with pytest.raises(InputError, match="training mode"):
        prepare_operator(model.train(), data, "ce")
    prepare_operator(model.train(), data, "ce", allow_nondeterministic=True)
    prepare_operator(model.eval(), data, "ce")


def test_cross_entropy_needs_targets() -> None:
    data = tiny_data("mlp")
    unlabeled = type(data)("x", data.inputs, None)
    with pytest.raises(InputError, match="--loss distill"):
        prepare_operator(tiny_mlp().eval(), unlabeled, "ce")
