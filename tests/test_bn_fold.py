"""BatchNorm folding is exact: folded eval output equals unfolded eval output (float64, 1e-10)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from compress.models.mnist_cnn import MnistCNN
from compress.quant.bn_fold import fold_batchnorm_
from compress.testing.tiny import tiny_convnet


def _randomise_bn(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor in (module.weight, module.bias, module.running_mean):
                    tensor.copy_(torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.3)


def _check_exact(model: nn.Module, inputs: torch.Tensor, expected_pairs: list[tuple[str, str]]) -> None:
    model = model.double().eval()
    reference = copy.deepcopy(model)
    pairs = fold_batchnorm_(model)
    assert pairs == expected_pairs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        error = (model(inputs) - reference(inputs)).abs().max().item()
    assert error < 1e-10, f"folded output differs by {error:.3g}"


def test_fold_mnist_cnn_is_exact() -> None:
    torch.manual_seed(0)
    model = MnistCNN()
    _randomise_bn(model)
    pairs = [("stem.0", "stem.1"), ("conv.0", "conv.1"), ("block.dw.0", "block.dw.1"), ("block.pw.0", "block.pw.1")]
    _check_exact(model, torch.randn(4, 1, 28, 28, dtype=torch.float64), pairs)
    assert model.stem[0].bias is not None and list(dict(model.named_parameters())).count("stem.0.weight") == 1


def test_fold_tiny_convnet_is_exact() -> None:
    _check_exact(tiny_convnet(), torch.randn(5, 1, 5, 5, dtype=torch.float64), [("conv", "bn")])


def test_fold_skips_bn_whose_conv_output_is_shared() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y

    assert fold_batchnorm_(Shared().eval()) == []
