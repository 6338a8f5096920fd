"""The vocabulary is defined once: one compressible-layer predicate, one fx tracer, one kept-channel
rule, one LayerOption; the planner imports no backend; channel groups of a residual model."""

import ast
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from compress.errors import ConfigError, InputError
from compress.prune.masks import channel_mask
from compress.vocab.channels import kept_width
from compress.vocab.groups import channel_groups
from compress.vocab.layers import LAYER_KINDS, compressible_layers
from compress.vocab.options import LayerOption
from compress.vocab.tracing import fx_graph, require_fx_graph

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "compress").rglob("*.py"), *(ROOT / "export").rglob("*.py")])
SOURCES = [p for p in SOURCES if "compress/export" not in p.as_posix() and "compress/kernels" not in p.as_posix()]


def _trees():
    for path in SOURCES:
        yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _attribute_names(node: ast.AST) -> set[str]:
    return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


# Owned by another branch at the time of writing; switch it to ``is_compressible`` and drop it here.


def test_only_the_vocabulary_names_the_compressible_layer_kinds() -> None:
    """No other module writes a tuple holding both Conv2d and Linear (the layer-kind list)."""
    offenders = [f"{path}:{node.lineno}" for path, tree in _trees() for node in ast.walk(tree)
                 if isinstance(node, ast.Tuple) and {"Conv2d", "Linear"} <= _attribute_names(node)
                 and path != "compress/vocab/layers.py"]
    assert offenders == []


def test_only_the_vocabulary_traces_with_torch_fx() -> None:
    offenders = [f"{path}:{node.lineno}" for path, tree in _trees() for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and node.attr == "symbolic_trace"
                 and path != "compress/vocab/tracing.py"]
    assert offenders == []


def test_layer_option_and_kept_rule_are_defined_once() -> None:
    for name in ("LayerOption", "kept_width", "PATTERNS", "EXPORT_TARGETS"):
        defined = [path for path, tree in _trees() for node in tree.body
                   if (isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name)
                   or (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets))]
        assert len(defined) == 1, (name, defined)


def test_the_planner_imports_no_onnx_and_no_backend() -> None:
    forbidden = ("onnx", "onnxruntime", "compress.backends", "compress.export", "tensorrt")
    offenders = []
    for path, tree in _trees():
        if not path.startswith("compress/plan/"):
            continue
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path}: {n}" for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)]
    assert offenders == []


def test_conv1d_and_conv3d_are_not_compressible() -> None:
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Conv2d(4, 4, 1), nn.Conv3d(4, 4, 1), nn.Linear(4, 2))
    assert list(compressible_layers(model)) == ["1", "3"]
    assert LAYER_KINDS == (nn.Conv2d, nn.Linear)


@given(st.integers(1, 300), st.floats(0, 0.99), st.sampled_from([None, 1, 4, 8, 16]))
def test_kept_width_is_a_valid_width_near_the_kept_fraction(channels: int, ratio: float, round_to) -> None:
    keep = kept_width(channels, ratio, round_to)
    assert 1 <= keep <= channels
    step = round_to or 1
    if step <= channels and keep < channels:
        assert keep % step == 0
    if step == 1:
        assert abs(keep - (1 - ratio) * channels) <= 0.5 or keep == 1


def test_the_channel_mask_keeps_what_the_kept_rule_says() -> None:
    weight = torch.randn(10, 3)
    for ratio in (0.15, 0.25, 0.45, 0.5, 0.95):
        assert int(channel_mask(weight, ratio)[:, 0].sum()) == kept_width(10, ratio)


def test_layer_options_validate_and_label() -> None:
    with pytest.raises(ConfigError, match="pattern"):
        LayerOption(8, 0.5, "blocks")
    with pytest.raises(ConfigError, match="sparsity"):
        LayerOption(8, 1.0)
    assert LayerOption(8, 0.25, "channel", input_sparsity=0.5).label() == "w8+ch0.25@in-ch0.5"
    assert LayerOption(8, 0.25, "channel", input_sparsity=0.5).own_label() == "w8+ch0.25"
    assert LayerOption(4, 0.5, "2:4").mask_sparsity() == 0.5 and LayerOption(4, 0.5, "channel").mask_sparsity() == 0


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.a(x)))
        return self.c(torch.relu(h + self.b(h)))


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) if x.sum() > 0 else -self.a(x)  # data-dependent control flow


def test_channel_groups_couple_producers_readers_and_norms() -> None:
    groups = {g.name: g for g in channel_groups(Branchy())}
    assert set(groups) == {"a", "c"}
    members = {str(m) for m in groups["a"].members}
    assert members == {"a:out", "bn:bn", "b:in", "b:out", "c:in"} and groups["a"].reason is None
    assert groups["c"].reason == "model output"


def test_one_tracing_policy() -> None:
    assert fx_graph(Branchy()) is not None
    assert fx_graph(Untraceable()) is None
    with pytest.raises(InputError, match="channel pruning needs a torch.fx-traceable model"):
        channel_groups(Untraceable())
    with pytest.raises(InputError, match="ties need"):
        require_fx_graph(Untraceable(), "ties")
