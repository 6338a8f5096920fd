"""Feature (intermediate-layer) distillation: the loss against a plain reference written here (value
and gradient), padding left out, module names resolved strictly, the spec and recipe key, and
finetune_ end to end with ``kd_layers`` on a tiny token model and a tiny convnet."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compress.data.source import TensorData, TokenData
from compress.errors import ConfigError
from compress.finetune.features import WithFeatures, feature_layers, repeated_blocks
from compress.finetune.losses import cosine_distillation, feature_distillation
from compress.finetune.order import epoch_order
from compress.finetune.spec import FinetuneSpec
from compress.finetune.train import finetune_
from compress.recipe.schema import parse_recipe
from compress.testing.tiny import tiny_convnet, tiny_data

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB, WIDTH = 11, 6


class Block(nn.Module):
    """h + tanh(W·h + mean of the real tokens' h): tokens mix, padding does not enter; returns a
    one-tuple as Hugging Face layers do."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(WIDTH, WIDTH)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor]:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        context = (hidden * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)
        return (hidden + torch.tanh(self.mix(hidden) + context),)


class TinyEncoder(nn.Module):
    """Embedding, two Blocks in an nn.ModuleList, masked mean pooling: called (input_ids, attention_mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.layers = nn.ModuleList([Block(), Block()])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(input_ids)
        for layer in self.layers:
            (hidden,) = layer(hidden, attention_mask)
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1)


def _models() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher = TinyEncoder().double()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return teacher, student


def _tokens(count: int = 5, length: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (count, length), generator=generator)
    lengths = torch.randint(2, length + 1, (count,), generator=generator)
    lengths[0] = length
    mask = (torch.arange(length) < lengths.unsqueeze(1)).long()
    return ids * mask, mask


def _reference_loss(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...],
                    mask: torch.Tensor) -> torch.Tensor:
    """Per module: Σ over real tokens of ‖s − t‖², over Σ of ‖t‖², by explicit loops; mean over modules."""
    ratios = []
    for s, t in zip(student, teacher):
        error, norm = s.new_zeros(()), s.new_zeros(())
        for b in range(mask.shape[0]):
            for position in range(mask.shape[1]):
                if mask[b, position]:
                    error = error + ((s[b, position] - t[b, position]) ** 2).sum()
                    norm = norm + (t[b, position] ** 2).sum()
        ratios.append(error / norm)
    return sum(ratios) / len(ratios)


def test_feature_loss_is_zero_for_the_teacher_and_its_gradient_matches_a_reference() -> None:
    teacher, student = _models()
    names = repeated_blocks(teacher)
    assert names == ("layers.0", "layers.1")
    inputs = _tokens()
    with torch.no_grad():
        _, teacher_features = WithFeatures(teacher, names)(*inputs)
        _, same = WithFeatures(copy.deepcopy(teacher), names)(*inputs)
    assert float(feature_distillation(same, teacher_features, inputs[1].bool())) == 0.0
    params = list(student.parameters())
    _, features = WithFeatures(student, names)(*inputs)
    ours = feature_distillation(features, teacher_features, inputs[1].bool())
    ours_grad = torch.autograd.grad(ours, params)
    _, features = WithFeatures(student, names)(*inputs)
    reference = _reference_loss(features, teacher_features, inputs[1])
    reference_grad = torch.autograd.grad(reference, params)
    assert float(ours.detach()) == pytest.approx(float(reference.detach()), rel=1e-12)
    assert float(ours.detach()) > 1e-3
    for mine, theirs in zip(ours_grad, reference_grad):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-14)


def test_padding_is_left_out_of_the_feature_loss() -> None:
    generator = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    base = float(feature_distillation((student,), (teacher,), mask))
    changed_student, changed_teacher = student.clone(), teacher.clone()
    changed_student[~mask] = 100.0
    changed_teacher[~mask] = -7.0
    assert float(feature_distillation((changed_student,), (changed_teacher,), mask)) == pytest.approx(base, rel=1e-14)
    assert float(feature_distillation((changed_student,), (changed_teacher,), None)) > 10 * base
    expected = float(((student - teacher)[mask] ** 2).sum() / (teacher[mask] ** 2).sum())
    assert base == pytest.approx(expected, rel=1e-12)


def test_conv_features_count_every_entry_and_shapes_must_match() -> None:
    generator = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(2, 3, 2, 4, 4, generator=generator, dtype=torch.float64)
    expected = float(((student - teacher) ** 2).sum() / (teacher**2).sum())
    assert float(feature_distillation((student,), (teacher,), None)) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ConfigError, match=r"^finetune\.kd_layers: .*shape \[3, 2, 4, 4\].*\[3, 2, 4\]"):
        feature_distillation((student,), (teacher[..., 0],), None)


def test_bad_module_names_give_a_one_line_config_error() -> None:
    teacher, student = _models()
    with pytest.raises(ConfigError) as error:
        feature_layers(teacher, student, ("layers.0", "layers.7"))
    assert "'layers.7'" in str(error.value) and "teacher" in str(error.value) and "\n" not in str(error.value)
    pruned = copy.deepcopy(student)
    del pruned.layers[1]
    with pytest.raises(ConfigError, match=r"no module named 'layers.1' in the student"):
        feature_layers(teacher, pruned, "blocks")
    with pytest.raises(ConfigError, match=r"blocks found no nn.ModuleList") as error:
        feature_layers(tiny_convnet(), tiny_convnet(), "blocks")
    assert "\n" not in str(error.value)
    assert feature_layers(teacher, student, ["layers.1.mix"]) == ("layers.1.mix",)
    assert feature_layers(teacher, student, "none") == ()


def test_spec_and_recipe_key() -> None:
    spec = FinetuneSpec(mode="kd", kd_layers=["layers.0", "layers.1"], kd_layers_weight=0.5)
    assert spec.kd_layers == ("layers.0", "layers.1") and spec.uses_features
    assert FinetuneSpec.from_dict(spec.to_dict()) == spec and spec.to_dict()["kd_layers"] == ["layers.0", "layers.1"]
    for bad in ("all", [], ["a", "a"], ["a", 3], 5):
        with pytest.raises(ConfigError, match="kd_layers"):
            FinetuneSpec(mode="kd", kd_layers=bad)
    with pytest.raises(ConfigError, match="kd_layers.*needs a teacher"):
        FinetuneSpec(mode="qat", kd_layers="blocks")
    with pytest.raises(ConfigError, match="kd_layers_weight"):
        FinetuneSpec(kd_layers_weight=0)
    recipe = {"version": 1, "model": {"spec": "builtin:mnist-cnn"}, "data": {"calibration": "builtin:mnist5k"},
              "finetune": {"mode": "kd", "kd_layers": ["a.b"]}}
    assert parse_recipe(recipe, "r.yaml").finetune_spec().kd_layers == ("a.b",)
    for section, key in (({"mode": "kd", "kd_layers": "everything"}, "finetune.kd_layers: 'everything' is not allowed"),
                         ({"mode": "kd", "kd_layers": {"a": 1}}, "finetune.kd_layers: {'a': 1} is not allowed"),
                         ({"mode": "qat", "kd_layers": "blocks"}, "finetune: this combination is not allowed")):
        with pytest.raises(ConfigError) as error:
            parse_recipe({**recipe, "finetune": section}, "r.yaml")
        assert key in str(error.value), str(error.value)


def test_finetune_with_block_features_starts_from_cosine_plus_feature_loss_and_recovers() -> None:
    teacher, student = _models()
    ids, mask = _tokens(32, 7, seed=1)
    data = TokenData("tokens", (ids, mask), None)
    start = copy.deepcopy(student)
    spec = FinetuneSpec(mode="kd", kd_loss="cosine", kd_layers="blocks", kd_layers_weight=2.0, epochs=6,
                        batch_size=8, lr=0.02, optimizer="adamw", sharpness_every=0, seed=2)
    result = finetune_(student, teacher, data, spec)
    batch = next(data.subset(epoch_order(32, 2, 0)[:8].tolist(), "first").batches(8))
    with torch.no_grad():
        output, features = WithFeatures(start, ("layers.0", "layers.1"))(*batch.inputs)
        target, target_features = WithFeatures(teacher, ("layers.0", "layers.1"))(*batch.inputs)
    expected = cosine_distillation(output, target) + 2.0 * _reference_loss(features, target_features, batch.inputs[1])
    assert result.losses[0] == pytest.approx(float(expected), rel=1e-9)
    assert sum(result.losses[-4:]) < 0.5 * sum(result.losses[:4]), result.losses
    assert not isinstance(student, WithFeatures) and set(student.state_dict()) == set(teacher.state_dict())


def test_auto_lr_and_named_conv_features() -> None:
    """The sharpness (lr auto) sees the same (output, features) loss; a Conv2d's output works by name."""
    data = tiny_data("conv", 32)
    teacher = tiny_convnet().double()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.conv.weight.mul_(0.7)
    data = TensorData("conv", (data.inputs[0].double(),), None)
    spec = FinetuneSpec(mode="kd", kd_loss="mse", kd_layers=["conv", "mix"], batch_size=8, max_steps=3,
                        sharpness_every=0)
    result = finetune_(student, teacher, data, spec)
    assert result.lr_source == "auto" and 0 < result.lr < float("inf") and result.initial_sharpness > 0
    plain = finetune_(copy.deepcopy(student), teacher, data, FinetuneSpec(**{**spec.to_dict(), "kd_layers": "none"}))
    assert plain.initial_sharpness != pytest.approx(result.initial_sharpness)


def test_a_module_outside_the_forward_pass_is_refused() -> None:
    teacher, _ = _models()
    teacher.spare = nn.Linear(WIDTH, WIDTH)
    with pytest.raises(ConfigError, match="'spare' does not run"):
        WithFeatures(teacher, ("layers.0", "spare"))(*_tokens())
