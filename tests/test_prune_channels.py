"""Channel pruning that removes channels: coupled groups found with torch.fx, shapes stay
consistent, and the pruned model equals the unpruned model with the removed channels' activations
zeroed where they are produced (zero producer rows, depthwise filters and BN γ, β)."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from compress.errors import InputError
from compress.models.mnist_cnn import MnistCNN
from compress.prune.apply import choose_channels, prune_model_
from compress.prune.channels import zero_channels_
from compress.vocab.channels import kept_width
from compress.vocab.groups import channel_groups
from compress.prune.records import PruneSettings
from compress.testing.tiny import tiny_convnet


def randomized(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BN statistics, so every channel matters and BN is not the identity."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def check_pruned_equals_masked(model: nn.Module, request: dict[str, PruneSettings], inputs: torch.Tensor) -> nn.Module:
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    for group, kept in choose_channels(model, request).values():
        zero_channels_(masked, group, kept)
    prune_model_(pruned, request)
    with torch.no_grad():
        expected, original, actual = masked(inputs), model(inputs), pruned(inputs)
    scale = float(expected.abs().max())
    assert float((expected - original).abs().max()) > 1e-3 * scale  # the pruning changes the output
    error = float((actual - expected).abs().max())
    assert error <= 1e-5 * max(1.0, scale), (error, scale)
    return pruned


def test_mnist_cnn_conv_group_spans_the_residual_block_and_the_head() -> None:
    groups = {g.name: g for g in channel_groups(MnistCNN())}
    members = [str(m) for m in groups["conv.0"].members]
    assert members == ["conv.0:out", "conv.1:bn", "block.dw.0:dw", "block.dw.1:bn", "block.pw.0:in",
                       "block.pw.0:out", "block.pw.1:bn", "head:in"]
    assert groups["conv.0"].members[-1].block == 49 and groups["conv.0"].reason is None
    assert [str(m) for m in groups["stem.0"].members] == ["stem.0:out", "stem.1:bn", "conv.0:in"]
    assert groups["head"].reason == "model output"


def test_resnet18_stage_groups_tie_the_downsample_and_every_block() -> None:
    groups = {g.name: g for g in channel_groups(torchvision.models.resnet18())}
    assert len(groups) == 13 and sum(g.reason is None for g in groups.values()) == 12
    stage = {str(m) for m in groups["layer4.0.conv2"].members}
    assert {"layer4.0.downsample.0:out", "layer4.1.conv2:out", "fc:in"} <= stage
    assert {str(m) for m in groups["conv1"].members} >= {"layer1.1.conv2:out", "layer2.0.downsample.0:in"}


@settings(max_examples=8, deadline=None)
@given(stem=st.floats(0.1, 0.9), conv=st.floats(0.1, 0.9), seed=st.integers(0, 100))
def test_pruned_mnist_cnn_equals_masked(stem: float, conv: float, seed: int) -> None:
    model = randomized(MnistCNN(), seed)
    request = {"stem.0": PruneSettings(stem, "channel"), "block.pw.0": PruneSettings(conv, "channel")}
    inputs = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    pruned = check_pruned_equals_masked(model, request, inputs)
    a, b = kept_width(16, stem, None), kept_width(32, conv, None)
    expected = 9 * a + 2 * a + 9 * a * b + 2 * b + 9 * b + 2 * b + b * b + 2 * b + 49 * b * 10 + 10
    assert sum(p.numel() for p in pruned.parameters()) == expected
    assert pruned.head.in_features == 49 * b and pruned.block.dw[0].groups == b


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 100), data=st.data())
def test_pruned_resnet18_equals_masked(seed: int, data: st.DataObject) -> None:
    model = randomized(torchvision.models.resnet18(num_classes=10), seed)
    names = [g.name for g in channel_groups(model) if g.reason is None]
    request = {name: PruneSettings(data.draw(st.floats(0.1, 0.9)), "channel", round_to=data.draw(st.sampled_from([None, 8])))
               for name in names}
    inputs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    pruned = check_pruned_equals_masked(model, request, inputs)
    widths = {n: pruned.get_submodule(n).out_channels for n in names}
    for name, setting in request.items():
        full = model.get_submodule(name).out_channels
        assert widths[name] == kept_width(full, setting.ratio, setting.round_to)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


@settings(max_examples=200, deadline=None)
@given(channels=st.integers(1, 600), ratio=st.floats(0, 0.99), round_to=st.sampled_from([None, 1, 4, 8, 16]))
def test_kept_width_honours_round_to(channels: int, ratio: float, round_to: int | None) -> None:
    keep = kept_width(channels, ratio, round_to)
    assert 1 <= keep <= channels
    target = (1 - ratio) * channels
    if round_to is None:
        assert abs(keep - target) <= 0.5 or keep == 1
    elif keep != channels:
        assert keep % round_to == 0 and (abs(keep - target) <= round_to / 2 or keep == round_to)


def test_round_to_on_the_model_and_the_records() -> None:
    model = MnistCNN().eval()
    records = prune_model_(model, {"conv.0": PruneSettings(0.3, "channel", round_to=8)})
    assert records.groups["conv.0"].kept == 24 and model.conv[0].out_channels == 24  # round(22.4) -> 24
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_obs_criterion_keeps_the_channels_of_highest_saliency() -> None:
    model = MnistCNN().eval()
    saliency = {"stem.0": torch.zeros(16, 1, 3, 3)}
    saliency["stem.0"][[3, 5, 11, 12]] = 1.0
    choice = choose_channels(model, {"stem.0": PruneSettings(0.75, "channel", "obs")}, saliency)
    assert choice["stem.0"][1].tolist() == [3, 5, 11, 12]


def test_magnitude_criterion_keeps_the_channels_of_largest_group_norm() -> None:
    model = MnistCNN().eval()
    with torch.no_grad():
        model.stem[0].weight.mul_(0.01)
        model.stem[0].weight[[2, 7]] *= 1000
        model.conv[0].weight.mul_(0.01)  # the consumer's columns, also summed into the score
    choice = choose_channels(model, {"stem.0": PruneSettings(0.875, "channel")})
    assert choice["stem.0"][1].tolist() == [2, 7]


def test_unsupported_ops_leave_the_group_alone_with_a_reason() -> None:
    model = tiny_convnet()
    before = copy.deepcopy(model)
    records = prune_model_(model, {"conv": PruneSettings(0.5, "channel"), "mix": PruneSettings(0.5, "channel"),
                                   "head": PruneSettings(0.5, "channel")})
    assert "softplus is not a channel-wise op" in records.groups["conv"].reason
    assert "produced by softplus" in records.groups["mix"].reason
    assert records.groups["head"].reason == "model output"
    assert all(r.kept == r.channels for r in records.groups.values())
    inputs = torch.randn(5, 1, 5, 5)
    assert torch.equal(model(inputs), before(inputs))


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.shared = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(8, 8, 1)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.shared(torch.relu(torch.cat([self.a(x), self.b(x)], dim=1)))
        return self.out(self.shared(h))


def test_groups_with_masked_layers_are_refused() -> None:
    model = MnistCNN().eval()
    prune_model_(model, {"block.pw.0": PruneSettings(0.5)})
    records = prune_model_(model, {"conv.0": PruneSettings(0.5, "channel"), "stem.0": PruneSettings(0.5, "channel")})
    assert "block.pw.0 has a persistent weight mask" in records.groups["conv.0"].reason
    assert records.groups["conv.0"].kept == 32 and records.groups["stem.0"].kept == 8


def test_concatenation_and_shared_layers_are_refused() -> None:
    groups = {g.name: g for g in channel_groups(Concat())}
    assert "cat is not a channel-wise op" in groups["a"].reason and "cat" in groups["b"].reason
    assert "shared is called more than once" in groups["shared"].reason


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if x.sum() > 0 else -self.conv(x)


def test_untraceable_and_unused_layers_are_user_errors() -> None:
    with pytest.raises(InputError, match="torch.fx-traceable"):
        prune_model_(Untraceable(), {"conv": PruneSettings(0.5, "channel")})
    model = MnistCNN()
    model.spare = nn.Linear(3, 3)
    with pytest.raises(InputError, match="never run"):
        prune_model_(model, {"spare": PruneSettings(0.5, "channel")})
