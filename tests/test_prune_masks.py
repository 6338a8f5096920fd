"""Persistent pruning masks: the requested ratio and the 2:4 pattern survive optimizer steps, the
masked model's state dict reloads, and it exports to ONNX with outputs equal to PyTorch's."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from compress.errors import ConfigError, InputError
from compress.models.mnist_cnn import MnistCNN
from compress.prune.apply import prune_model_
from compress.prune.persist import masked_layers, remove_masks_
from compress.prune.records import PruneRecords, PruneSettings

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
}


def small_net(seed: int, features: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, features))


def train_steps(model: nn.Module, optimizer_name: str, steps: int = 3) -> None:
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        inputs = torch.randn(8, 2, 6, 6, generator=generator)
        loss = model(inputs).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@settings(max_examples=25, deadline=None)
@given(ratio=st.floats(0, 0.95), seed=st.integers(0, 1000), optimizer=st.sampled_from(sorted(OPTIMIZERS)))
def test_unstructured_masks_keep_the_ratio_through_training(ratio: float, seed: int, optimizer: str) -> None:
    model = small_net(seed, 5)
    records = prune_model_(model, {"0": PruneSettings(ratio), "3": PruneSettings(ratio)})
    zeros_before = {name: model.get_submodule(name).weight == 0 for name in ("0", "3")}
    train_steps(model, optimizer)
    for name, zeros in zeros_before.items():
        layer = model.get_submodule(name)
        expected = round(ratio * layer.weight.numel())
        assert int(zeros.sum()) == expected, (name, int(zeros.sum()), expected)
        assert records.masks[name].sparsity == pytest.approx(expected / layer.weight.numel())
        assert bool((layer.weight[zeros] == 0).all())
        assert bool((layer.parametrizations.weight.original[zeros] == 0).all())  # W₀ stays zero too
        assert int((layer.weight != 0).sum()) == layer.weight.numel() - expected  # the kept weights trained


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), optimizer=st.sampled_from(sorted(OPTIMIZERS)))
def test_two_four_pattern_survives_training(seed: int, optimizer: str) -> None:
    model = small_net(seed, 8)
    prune_model_(model, {"3": PruneSettings(0.5, "2:4")})
    train_steps(model, optimizer)
    groups = model.get_submodule("3").weight.detach().reshape(8, -1, 4)
    assert bool(((groups != 0).sum(dim=-1) == 2).all())


def test_obs_criterion_prunes_the_lowest_saliency() -> None:
    model = small_net(0, 5)
    saliency = torch.rand(5, 64, generator=torch.Generator().manual_seed(1))
    prune_model_(model, {"3": PruneSettings(0.25, criterion="obs")}, {"3": saliency})
    pruned = model.get_submodule("3").weight == 0
    assert float(saliency[pruned].max()) <= float(saliency[~pruned].min())
    assert int(pruned.sum()) == 80


def test_masked_state_dict_reloads_and_baked_weights_load_into_the_plain_model() -> None:
    model = small_net(0, 5)
    prune_model_(model, {"0": PruneSettings(0.5), "3": PruneSettings(0.5, "2:4")})
    inputs = torch.randn(4, 2, 6, 6)
    twin = small_net(1, 5)
    prune_model_(twin, {"0": PruneSettings(0.5), "3": PruneSettings(0.5, "2:4")})
    twin.load_state_dict(model.state_dict())
    assert torch.equal(twin(inputs), model(inputs))
    expected = model(inputs)
    remove_masks_(model)
    assert masked_layers(model) == []
    plain = small_net(2, 5)
    plain.load_state_dict(model.state_dict())  # strict: the same names as the unpruned architecture
    assert torch.equal(plain(inputs), expected)


@pytest.mark.parametrize("bake", [False, True])
def test_masked_model_exports_to_onnx_with_equal_outputs(bake: bool) -> None:
    import onnxruntime as ort

    model = MnistCNN().eval()
    prune_model_(model, {"conv.0": PruneSettings(0.5), "head": PruneSettings(0.5, "2:4")})
    if bake:
        remove_masks_(model)
    inputs = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    torch.onnx.export(model, (inputs,), buffer, dynamo=False, input_names=["input"], output_names=["output"])
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (onnx_output,) = session.run(None, {"input": inputs.numpy()})
    with torch.no_grad():
        difference = float((torch.from_numpy(onnx_output) - model(inputs)).abs().max())
    assert difference < 1e-5, difference


def test_records_round_trip() -> None:
    model = MnistCNN().eval()
    records = prune_model_(copy.deepcopy(model), {
        "conv.0": PruneSettings(0.5, "channel", round_to=8), "head": PruneSettings(0.3),
        "block.dw.0": PruneSettings(0.5, "channel", round_to=8)})
    data = records.to_dict()
    assert PruneRecords.from_dict(data) == records
    assert data["groups"]["conv.0"]["kept"] == 16


@pytest.mark.parametrize("kwargs, message", [
    ({"ratio": 1.0}, "ratio"),
    ({"ratio": 0.3, "pattern": "2:4"}, "2:4"),
    ({"ratio": 0.3, "pattern": "block"}, "pattern"),
    ({"ratio": 0.3, "criterion": "taylor"}, "criterion"),
    ({"ratio": 0.3, "round_to": 8}, "round_to"),
    ({"ratio": 0.3, "pattern": "channel", "round_to": 0}, "round_to"),
])
def test_bad_settings_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PruneSettings(**kwargs)


@pytest.mark.parametrize("settings_, saliency, message", [
    ({"stem": PruneSettings(0.5)}, None, "only Conv2d and Linear"),
    ({"nope": PruneSettings(0.5)}, None, "no such module"),
    ({"head": PruneSettings(0.5, criterion="obs")}, None, "needs its saliency"),
    ({"head": PruneSettings(0.5, criterion="obs")}, {"head": torch.ones(3)}, "shape"),
    ({"stem.0": PruneSettings(0.5, "2:4")}, None, "2:4"),  # reduction size 9
    ({"conv.0": PruneSettings(0.5, "channel"), "block.pw.0": PruneSettings(0.25, "channel")}, None, "different"),
])
def test_bad_requests_are_user_errors(settings_: dict, saliency: dict | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        prune_model_(MnistCNN().eval(), settings_, saliency)


class Doubled(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return 2 * weight


def test_masking_a_weight_with_another_parametrization_is_a_user_error() -> None:
    model = small_net(0, 5)
    torch.nn.utils.parametrize.register_parametrization(model.get_submodule("3"), "weight", Doubled())
    with pytest.raises(InputError, match="Doubled"):
        prune_model_(model, {"3": PruneSettings(0.5)})


def test_masking_twice_keeps_the_union_of_pruned_weights() -> None:
    model = small_net(0, 5)
    prune_model_(model, {"3": PruneSettings(0.5)})
    first = model.get_submodule("3").weight == 0
    prune_model_(model, {"3": PruneSettings(0.5, "2:4")})
    weight = model.get_submodule("3").weight
    assert bool((weight[first] == 0).all()) and masked_layers(model) == ["3"]
    assert bool(((weight.detach().reshape(5, -1, 4) != 0).sum(dim=-1) <= 2).all())
