"""``compress curvature`` on input it cannot use: one line naming the problem, exit status 2."""

import pytest

FACTORIES = """
import torch
from torch import nn

def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).eval()

def model():
    return _net()

def nan_weight():
    net = _net()
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")
    return net

class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _net()
        self.after = nn.Linear(3, 3)
    def forward(self, x):
        return self.after(self.inner(x))

def overflow():
    net = Wrapped().eval()
    with torch.no_grad():
        net.inner[2].weight.fill_(3e38)  # finite, but every sum of two overflows
    return net

class Argmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _net()
    def forward(self, x):
        return self.inner(x).argmax(dim=1)

def argmax():
    return Argmax().eval()

class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _net()
    def forward(self, x):
        return self.inner(x).detach()

def detached():
    return Detached().eval()

def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(24, 4, generator=g), torch.randint(0, 3, (24,), generator=g)

def nan_data():
    x, y = data()
    x[5, 1] = float("inf")
    return x, y
"""


@pytest.fixture
def spec(factory_file):
    path = factory_file(FACTORIES, name="bad_factories.py")
    return lambda name: f"{path}:{name}"


@pytest.mark.parametrize("model, data, extra, message", [
    ("model", "data", ("--max-samples", "0"), "--max-samples"),
    ("model", "data", ("--max-samples", "1"), "--max-samples=1 leaves no spread"),
    ("model", "data", ("--probes-per-pass", "0"), "--probes-per-pass must be at least 1"),
    ("model", "data", ("--memory-budget", "0"), "--memory-budget must be positive"),
    ("nan_weight", "data", (), "has NaN in 2.weight"),
    ("model", "nan_data", (), "in input 0 (first at sample"),
    ("overflow", "data", (), "module 'inner.2' is the first module to produce them"),
    ("argmax", "data", (), "class targets need outputs of shape (batch, classes)"),
    ("detached", "data", (), "not differentiable"),
])
def test_bad_input_is_one_line_and_exit_2(cli, spec, model, data, extra, message) -> None:
    result = cli("curvature", spec(model), "--data", spec(data), *extra)
    assert result.code == 2, result.err
    assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
