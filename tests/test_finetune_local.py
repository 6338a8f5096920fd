"""Block-local distillation (``finetune.local_steps``): each kd_layers module trained alone on the
teacher's input to it (positional and keyword arguments replayed), its loss the relative squared
error to the teacher module's output; checked against the losses computed here by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compress.data.source import TensorData
from compress.errors import ConfigError
from compress.finetune.local import module_io
from compress.finetune.losses import relative_squared_error
from compress.finetune.order import epoch_order
from compress.finetune.spec import FinetuneSpec
from compress.finetune.train import finetune_

pytestmark = pytest.mark.usefixtures("single_thread")


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        return (x + torch.tanh(self.inner(x)) * scale,)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.blocks, self.head = nn.Linear(6, 8), nn.ModuleList([Block(), Block()]), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h, scale=torch.full((1,), 0.5))[0]
        return self.head(h)


def _setup(count: int = 32) -> tuple[Net, Net, TensorData]:
    teacher = Net().eval()
    student = copy.deepcopy(teacher)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    data = TensorData("x", (torch.randn(count, 6, generator=generator),), None)
    return teacher, student, data


def _block_error(student: Net, teacher: Net, index: int, inputs: torch.Tensor) -> float:
    args, kwargs, target = module_io(teacher, teacher.blocks[index], (inputs,))
    with torch.no_grad():
        return float(relative_squared_error(student.blocks[index](*args, **kwargs)[0], target[0], None))


def test_module_io_is_the_call_inside_the_model() -> None:
    teacher, _, data = _setup()
    (inputs,) = data.inputs
    args, kwargs, output = module_io(teacher, teacher.blocks[1], (inputs,))
    with torch.no_grad():
        hidden = teacher.blocks[0](teacher.embed(inputs), scale=torch.full((1,), 0.5))[0]
    torch.testing.assert_close(args[0], hidden)
    torch.testing.assert_close(kwargs["scale"], torch.full((1,), 0.5))
    torch.testing.assert_close(output[0], teacher.blocks[1](hidden, scale=kwargs["scale"])[0])


def test_each_module_starts_from_the_teachers_input() -> None:
    """The first local step of every block: its loss on the first batch, the block fed the
    teacher's input (not the student's own, which differs after the perturbed embedding)."""
    teacher, student, data = _setup()
    start = copy.deepcopy(student)
    spec = FinetuneSpec(mode="kd", kd_loss="mse", kd_layers="blocks", local_steps=3, optimizer="sgd", momentum=0.0,
                        lr=0.05, batch_size=8, max_steps=1, sharpness_every=0)
    result = finetune_(student, teacher, data, spec)
    (inputs,) = data.inputs
    first = inputs[epoch_order(32, seed=0, epoch=0)[:8]]
    assert len(result.local_losses) == 6
    for index in (0, 1):
        expected = _block_error(start, teacher, index, first)
        assert result.local_losses[3 * index] == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():
        own_input = start.blocks[0](start.embed(first), scale=torch.full((1,), 0.5))[0]
        _, _, target = module_io(teacher, teacher.blocks[1], (first,))
        own = float(relative_squared_error(start.blocks[1](own_input, scale=torch.full((1,), 0.5))[0], target[0], None))
    assert abs(own - result.local_losses[3]) > 1e-3 * own


def test_the_local_phase_fits_every_block() -> None:
    teacher, student, data = _setup()
    (inputs,) = data.inputs
    before = [_block_error(student, teacher, i, inputs) for i in (0, 1)]
    spec = FinetuneSpec(mode="kd", kd_loss="mse", kd_layers="blocks", local_steps=150, optimizer="adamw", lr=1e-2,
                        batch_size=8, max_steps=1, sharpness_every=0)
    result = finetune_(student, teacher, data, spec)
    after = [_block_error(student, teacher, i, inputs) for i in (0, 1)]
    assert all(a < 0.1 * b for a, b in zip(after, before)), (before, after)
    assert len(result.local_losses) == 300 and len(result.losses) == 1


def test_settings_are_checked() -> None:
    for extra, message in (({"kd_layers": "none"}, "must be 0 with kd_layers none"),
                           ({"kd_layers": "blocks", "lr": "auto"}, "must be 0 with lr auto"),
                           ({"kd_layers": "blocks", "local_steps": -1}, "must be an integer >= 0")):
        with pytest.raises(ConfigError, match=message):
            FinetuneSpec(**{"mode": "kd", "lr": 1e-3, "local_steps": 2, **extra})
    with pytest.raises(ConfigError, match="must be 0 with mode qat"):
        FinetuneSpec(mode="qat", lr=1e-3, local_steps=2)
