"""Low-rank size accounting and the one-line refusals of ranks that truncate nothing or save nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.errors import ConfigError
from compress.lowrank.apply import apply_lowrank_
from compress.lowrank.modules import matrix_shape
from compress.lowrank.settings import LowRankSettings
from compress.lowrank.size import factorised_params, layer_params, max_useful_rank


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_max_useful_rank_is_the_largest_rank_that_saves_weights() -> None:
    for m in range(1, 40):
        for n in range(1, 40):
            useful = [r for r in range(1, min(m, n)) if r * (m + n) < m * n]
            assert max_useful_rank(m, n) == (max(useful) if useful else 0), (m, n)


@pytest.mark.parametrize("layer,rank", [
    (nn.Linear(40, 24), 5), (nn.Linear(40, 24, bias=False), 14), (nn.Linear(384, 1536), 300),
    (nn.Conv2d(6, 8, 3), 4), (nn.Conv2d(6, 8, (3, 5), groups=2, bias=False), 3), (nn.Conv2d(8, 16, 3, groups=4), 1),
])
def test_factorised_sizes_are_counted_exactly(layer: nn.Module, rank: int) -> None:
    m, n, groups = matrix_shape(layer)
    bias = layer.bias is not None
    assert layer_params(m, n, groups, bias) == params(layer)
    model = nn.Sequential(layer)
    record = apply_lowrank_(model, {"0": LowRankSettings(rank=rank, method="svd")}).layers["0"]
    assert params(model) == factorised_params(m, n, rank, groups, bias) == record.params_after
    assert record.params_before == layer_params(m, n, groups, bias) > record.params_after


def test_rank_ratio_keeps_that_fraction_of_the_weights() -> None:
    settings = LowRankSettings(rank_ratio=0.8)
    assert settings.rank_for(384, 384) == 153  # ⌊0.8·192⌋
    assert settings.rank_for(1536, 384) == 245  # ⌊0.8·307.2⌋
    assert factorised_params(384, 1536, 245) <= 0.8 * 384 * 1536


def one_line_config_error(match: str):
    return pytest.raises(ConfigError, match=match)


@pytest.mark.parametrize("rank,match", [
    (0, r"rank 0 is not allowed \(allowed: an integer >= 1\)"),
    (True, "rank True is not allowed"),
])
def test_invalid_settings_are_refused_on_construction(rank, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as error:
        LowRankSettings(rank=rank)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kwargs,match", [
    ({}, "exactly one of rank and rank_ratio"),
    ({"rank": 3, "rank_ratio": 0.5}, "exactly one of rank and rank_ratio"),
    ({"rank_ratio": 1.0}, r"rank_ratio 1.0 is not allowed \(allowed: 0 < rank_ratio < 1\)"),
    ({"rank_ratio": 0.0}, "rank_ratio 0.0 is not allowed"),
    ({"rank": 3, "method": "tucker"}, "method 'tucker' is not allowed .*svd, whitened, fisher, fisher_whitened"),
    ({"rank": 3, "damping": -0.1}, "damping -0.1 is not allowed"),
])
def test_setting_combinations_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as error:
        LowRankSettings(**kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("rank,match", [
    (24, r"fc: rank 24 is not below min\(m, n\) = 24 of its 24×40 weight.*allowed: 1..14"),
    (30, r"fc: rank 30 is not below min\(m, n\) = 24"),
    (15, r"fc: rank 15 of its 24×40 weight stores 960 weights per group, not fewer than the layer's 960 "
         r"\(allowed: 1..14"),
    (20, "stores 1280 weights per group, not fewer than the layer's 960"),
])
def test_ranks_that_save_nothing_are_refused_naming_the_limit(rank: int, match: str) -> None:
    model = nn.Sequential()
    model.add_module("fc", nn.Linear(40, 24))
    before = model.fc.weight.clone()
    with pytest.raises(ConfigError, match=match) as error:
        apply_lowrank_(model, {"fc": LowRankSettings(rank=rank, method="svd")})
    assert "\n" not in str(error.value)
    assert isinstance(model.fc, nn.Linear) and torch.equal(model.fc.weight, before)


def test_a_bad_layer_leaves_the_whole_model_untouched() -> None:
    model = nn.Sequential(nn.Linear(40, 24), nn.Linear(24, 24))
    with pytest.raises(ConfigError, match="1: rank 12"):
        apply_lowrank_(model, {"0": LowRankSettings(rank=3, method="svd"), "1": LowRankSettings(rank=12, method="svd")})
    assert all(isinstance(layer, nn.Linear) for layer in model)


@pytest.mark.parametrize("module,settings,match", [
    (nn.Conv2d(8, 8, 3, groups=8), LowRankSettings(rank=1, method="svd"),
     r"0: a depthwise conv with one output per group \(1×9 per group\) cannot be factorised"),
    (nn.Linear(2, 2), LowRankSettings(rank=1, method="svd"), r"its 2×2 weight cannot be factorised into fewer"),
    (nn.Linear(40, 24), LowRankSettings(rank_ratio=0.01, method="svd"), r"rank_ratio 0.01 gives rank 0 .*>= 0.0667"),
    (nn.BatchNorm2d(3), LowRankSettings(rank=1, method="svd"), "0 is a BatchNorm2d; only Conv2d and Linear"),
])
def test_layers_that_cannot_be_factorised_are_refused(module: nn.Module, settings: LowRankSettings, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as error:
        apply_lowrank_(nn.Sequential(module), {"0": settings})
    assert "\n" not in str(error.value)


def test_unknown_layer_is_refused() -> None:
    with pytest.raises(ConfigError, match="'head', which is not a module"):
        apply_lowrank_(nn.Sequential(nn.Linear(4, 4)), {"head": LowRankSettings(rank=1, method="svd")})
