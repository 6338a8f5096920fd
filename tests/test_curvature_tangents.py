"""Jacobian-vector products with cached primals (``compress.curvature.tangents``) against
``torch.func.jvp``, on nets with linear layers (with and without bias, frozen), 1-3d convolutions
with strides, padding, dilation and groups, an in-place change of a cached output, elementwise
activations, and a tiny BERT encoder with padding."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from compress.curvature.tangents import jacobian_vector_product


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(3, 4, 3, stride=2, padding=1)
        self.conv2d = nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, bias=False)
        self.conv3d = nn.Conv3d(6, 2, (1, 3, 3), padding=(0, 1, 1), padding_mode="circular")
        self.head = nn.Linear(2 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1d(x)
        h.mul_(0.5)  # in place on a cached output: recomputed every pass, still exact
        h = torch.tanh(h) + h  # (B, 4, 32); the add reads the changed output itself
        h = torch.nn.functional.gelu(self.conv2d(h.view(-1, 4, 8, 4).repeat(1, 1, 1, 2)))  # (B, 6, 8, 8)
        h = self.conv3d(h.unsqueeze(2)).squeeze(2)  # (B, 2, 8, 8)
        return self.head(h.flatten(1))


def _mlp() -> nn.Module:
    model = nn.Sequential(nn.Linear(7, 16), nn.Tanh(), nn.Linear(16, 16, bias=False), nn.GELU(), nn.Linear(16, 3),
                          nn.ReLU(inplace=True))  # changes the cached output of the last layer in place
    model[2].weight.requires_grad_(False)  # frozen: no tangent for it
    return model


def _tiny_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=16, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return BertModel(config)


def _cases() -> dict:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 40, (3, 9), generator=generator)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:], mask[2, 2:] = 0, 0  # padded sequences
    return {  # the model, its inputs, its output, its linear/conv layers + activation calls, those changed in place
        "mlp": (_mlp, (torch.randn(5, 7, generator=generator),), lambda out: out, 3 + 2, 1),
        "conv": (_ConvNet, (torch.randn(2, 3, 64, generator=generator),), lambda out: out, 4 + 2, 1),
        "bert": (_tiny_bert, (ids, mask), lambda out: out.last_hidden_state, 2 * 6 + 1 + 2 + 1, 0),  # + pooler, tanh
    }


def _setup(name: str):
    torch.manual_seed(0)
    build, inputs, pick, _, _ = _cases()[name]
    model = build().double().eval()
    inputs = tuple(x.double() if x.is_floating_point() else x for x in inputs)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    forward = lambda p: pick(functional_call(model, {**p, **frozen}, inputs))
    return model, params, forward


def _tangent(params: dict, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=generator, dtype=p.dtype) for n, p in params.items()}


class _MatrixProducts(TorchDispatchMode):
    """Counts the matrix-product and convolution kernels a pass runs."""

    KERNELS = ("mm", "addmm", "bmm", "convolution")

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.overloadpacket.__name__ in self.KERNELS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["mlp", "conv", "bert"])
def test_cached_jvp_equals_torch_func_jvp(name: str) -> None:
    model, params, forward = _setup(name)
    primals: list[torch.Tensor] = []
    with sdpa_kernel(SDPBackend.MATH):
        for seed in range(3):  # the first call fills the cache, the others read it
            tangent = _tangent(params, seed)
            output, product = jacobian_vector_product(forward, params, tangent, primals)
            reference_output, reference = jvp(forward, (params,), (tangent,))
            scale = reference.abs().max().item()
            assert scale > 0
            assert torch.allclose(output, reference_output, rtol=0, atol=1e-12 * reference_output.abs().max().item())
            assert (product - reference).abs().max().item() < 1e-12 * scale
            uncached = jacobian_vector_product(forward, params, tangent)[1]
            assert (uncached - reference).abs().max().item() < 1e-12 * scale
    assert len(primals) == _cases()[name][3]  # one entry per intercepted call


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_cached_primals_save_one_product_per_bilinear_call(name: str) -> None:
    model, params, forward = _setup(name)
    primals: list[torch.Tensor] = []
    counts = []
    for seed in range(2):
        with _MatrixProducts() as counter:
            jacobian_vector_product(forward, params, _tangent(params, seed), primals)
        counts.append(counter.count)
    layers = sum(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules())
    changed_in_place = _cases()[name][4]  # those outputs are recomputed every pass
    assert counts[0] - counts[1] == layers - changed_in_place  # the primal product of every other layer
    with _MatrixProducts() as counter:
        jvp(forward, (params,), (_tangent(params, 0),))
    assert counter.count >= counts[0]  # torch.func.jvp runs at least as many


def test_a_cache_from_another_forward_is_refused() -> None:
    _, conv_params, conv_forward = _setup("conv")
    primals: list = []
    jacobian_vector_product(conv_forward, conv_params, _tangent(conv_params, 0), primals)
    _, params, forward = _setup("mlp")
    with pytest.raises(RuntimeError, match="changed between passes"):
        jacobian_vector_product(forward, params, _tangent(params, 0), primals)


def test_an_output_without_parameters_has_a_zero_tangent() -> None:
    params = {"w": torch.randn(3)}
    constant = torch.arange(4.0)
    output, product = jacobian_vector_product(lambda p: constant * 2, params, {"w": torch.ones(3)}, [])
    assert torch.equal(output, constant * 2) and torch.equal(product, torch.zeros(4))
