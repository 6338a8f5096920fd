"""Tiny networks with smooth nonlinearities (so the Hessian differs from the Gauss-Newton
matrix) and fixed random data, small enough for dense float64 Hessians."""

from __future__ import annotations

import torch
from torch import nn

from compress.data.source import TensorData


def tiny_mlp() -> nn.Module:
    """Linear(6,5) tanh Linear(5,4) GELU Linear(4,3): 74 parameters."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4), nn.GELU(), nn.Linear(4, 3))


class TinyConvNet(nn.Module):
    """conv3x3(1->3) BN softplus, + residual conv1x1, flatten, linear(27->3): 132 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.mix = nn.Conv2d(3, 3, 1)
        self.head = nn.Linear(27, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.softplus(self.bn(self.conv(x)))
        return self.head(torch.flatten(h + torch.tanh(self.mix(h)), 1))


def tiny_convnet() -> nn.Module:
    torch.manual_seed(1)
    model = TinyConvNet()
    with torch.no_grad():  # non-trivial running statistics so eval-mode BN is not the identity
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def tiny_data(model: str, num_samples: int = 48, seed: int = 0) -> TensorData:
    """Random inputs shaped for ``tiny_mlp`` (6 features) or ``tiny_convnet`` (1x5x5), 3 classes."""
    generator = torch.Generator().manual_seed(seed)
    shape = (num_samples, 6) if model == "mlp" else (num_samples, 1, 5, 5)
    inputs = torch.randn(shape, generator=generator)
    targets = torch.randint(0, 3, (num_samples,), generator=generator)
    return TensorData(f"tiny-{model}", (inputs,), targets)


def trained(model: nn.Module, data: TensorData, steps: int = 300, lr: float = 0.02) -> nn.Module:
    """Full-batch Adam on cross-entropy, so the Hessian has the outlier structure of a trained net."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(*data.inputs), data.targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
