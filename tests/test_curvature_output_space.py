"""Output-space products per parameter: Σ_b J_bᵀ u_b in one backward pass over all batches
(``pull_back_all``) against the dense Jacobian, and per-layer squared norms from per-parameter
tensors (``block_squared_norms``) against the flat float64 inner products."""

import pytest
import torch
from torch.func import functional_call, jacrev

from compress.curvature.gram import output_size
from compress.curvature.prepare import prepare_operator
from compress.testing.tiny import tiny_convnet, tiny_data, tiny_mlp

TINY = {"mlp": tiny_mlp, "conv": tiny_convnet}


def _operator(name: str):
    model = TINY[name]().double().eval()
    data = tiny_data(name, num_samples=30)
    data = type(data)(data.name, tuple(x.double() for x in data.inputs), data.targets)
    return prepare_operator(model, data, "distill", batch_size=8)


def _dense_jacobian(operator) -> torch.Tensor:
    layout, flat = operator.layout, operator.layout.flatten(operator.params)
    rows = []
    for batch in operator.batches:
        outputs = lambda v: functional_call(operator.model, {**layout.unflatten(v), **operator.constants}, batch.inputs)
        rows.append(jacrev(outputs)(flat).reshape(-1, layout.dim))
    return torch.cat(rows)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("count", [1, 3])
def test_pull_back_all_is_the_jacobian_transpose_over_all_batches(name: str, count: int) -> None:
    operator = _operator(name)
    assert len(operator.batches) > 1
    vectors = torch.randn(count, output_size(operator), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    shapes = [reference.shape for reference in operator.references]
    pieces = [p.view(count, *s) for p, s in zip(vectors.split([s.numel() for s in shapes], dim=1), shapes)]
    pulled = operator.pull_back_all(pieces)
    assert set(pulled) == set(operator.layout.names)
    flat = torch.cat([pulled[n].reshape(count, -1) for n in operator.layout.names], dim=1)
    expected = vectors @ _dense_jacobian(operator)
    assert (flat - expected).abs().max().item() < 1e-12 * expected.abs().max().item()


def test_block_squared_norms_equal_the_flat_block_dots() -> None:
    operator = _operator("conv")
    layout = operator.layout
    generator = torch.Generator().manual_seed(2)
    tensors = {n: torch.randn(2, *s, generator=generator, dtype=torch.float32) for n, s in zip(layout.names, layout.shapes)}
    tensors[layout.names[1]] = None  # a parameter the output does not use: a zero block
    flat = torch.cat([torch.zeros(2, s.numel()) if tensors[n] is None else tensors[n].reshape(2, -1)
                      for n, s in zip(layout.names, layout.shapes)], dim=1)
    norms = layout.block_squared_norms(tensors, 2)
    assert norms.dtype == torch.float64 and norms.shape == (2, len(layout.layers))
    for row in range(2):
        assert torch.allclose(norms[row], layout.block_dots(flat[row], flat[row]), rtol=1e-12, atol=0)
