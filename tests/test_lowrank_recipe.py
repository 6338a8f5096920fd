"""The low-rank section of a recipe: its schema (every problem at once), its check against the
model (rank limits named, depthwise refused, quantization rules covering both factors), and the
recipe applied end to end: factorised layers, a checkpoint that reloads to equal outputs, and an
ONNX Runtime export with two Conv/MatMul nodes per factorised layer and parity within one step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.errors import ConfigError
from compress.lowrank.settings import LowRankSettings
from compress.models.spec import build_model
from compress.recipe.check import check_against_model
from compress.recipe.schema import load_recipe, parse_recipe

RECIPE = Path(__file__).parents[1] / "recipes" / "mnist-cnn-lowrank-int8.yaml"
BASE = {"version": 1, "model": {"spec": "builtin:mnist-cnn"}, "data": {"calibration": "builtin:mnist5k"}}


def _recipe(lowrank: dict, **sections) -> object:
    return parse_recipe({**BASE, "lowrank": {"layers": lowrank}, **sections}, "r.yaml")


def _problems(lowrank: dict, **sections) -> list[str]:
    return check_against_model(_recipe(lowrank, **sections), build_model("builtin:mnist-cnn"))


def test_rules_resolve_with_rank_and_rank_ratio_as_one_choice() -> None:
    recipe = _recipe({"default": {"rank_ratio": 0.5, "method": "svd"}, "head": {"rank": 3}, "stem.0": None})
    settings = recipe.lowrank_settings(["stem.0", "conv.0", "head"])
    assert settings == {"conv.0": LowRankSettings(rank_ratio=0.5, method="svd"),
                        "head": LowRankSettings(rank=3, method="svd")}
    assert parse_recipe(recipe.to_dict(), "again") == recipe


def test_schema_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        _recipe({"conv.0": {"rank": 0, "method": "qr"}, "head": {"rank": 2, "rank_ratio": 0.5},
                 "block.pw.0": {"rank_ratio": 1.0, "damping": "high", "ranks": 3}})
    lines = str(error.value).splitlines()
    assert lines[0] == "r.yaml: 6 problems"
    for expected in ("lowrank.layers.conv.0.rank: 0 is not allowed", "lowrank.layers.conv.0.method: 'qr' is not allowed",
                     "lowrank.layers.head: this combination is not allowed: low-rank settings need exactly one",
                     "lowrank.layers.block.pw.0.rank_ratio: 1.0 is not allowed (allowed: 0 < rank_ratio < 1)",
                     "lowrank.layers.block.pw.0.damping: 'high' is not allowed (allowed: a number)",
                     "lowrank.layers.block.pw.0.ranks: unknown key"):
        assert any(line.strip().startswith(expected) for line in lines), (expected, lines)


def test_model_check_names_the_rank_limits() -> None:
    # conv.0 is 32×144 (limit ⌊(32·144 − 1)/176⌋ = 26), head 10×1568 (limit 9), stem.0 16×9 (limit 5)
    problems = _problems({"conv.0": {"rank": 27}, "head": {"rank": 10}, "stem.0": {"rank_ratio": 0.01},
                          "block.dw.0": {"rank": 1}, "nothing": {"rank": 1}})
    assert len(problems) == 5, problems
    text = "\n".join(problems)
    assert "lowrank.layers.conv.0: rank 27 of its 32×144 weight stores 4752 weights per group, not fewer than " \
           "the layer's 4608 (allowed: 1..26" in text
    assert "lowrank.layers.head: rank 10 is not below min(m, n) = 10" in text
    assert "lowrank.layers.stem.0: rank_ratio 0.01 gives rank 0" in text
    assert "lowrank.layers.block.dw.0: a depthwise conv" in text
    assert "lowrank.layers.nothing: no such module in the model" in text
    assert not _problems({"conv.0": {"rank": 26}, "head": {"rank": 9}, "stem.0": {"rank_ratio": 0.5}})


def test_quantization_rule_of_a_factorised_layer_is_checked_on_both_factors() -> None:
    weight_only = {"layers": {"head": {"weight_bits": 4, "act_bits": None, "weight_block": 32}}}
    assert not _problems({}, quantization=weight_only)  # 1568 inputs: 49 blocks of 32
    problems = _problems({"head": {"rank": 6}}, quantization=weight_only)
    assert problems == ["quantization.layers.head: head.1: input features 6 are not a multiple of weight_block 32"]
    masked = _problems({"head": {"rank": 6}}, pruning={"layers": {"head": {"ratio": 0.5}}})
    assert masked == ["pruning.layers.head: pattern 'unstructured' is not allowed on a factorised layer "
                      "(lowrank.layers decides it; allowed: channel, or a null rule)"]


def test_validate_shows_each_layers_resolved_rank(cli, tmp_path: Path) -> None:
    result = cli("validate", str(RECIPE), "--json", str(tmp_path / "layers.json"))
    assert result.code == 0, result.err
    ranks = {line.split("│")[1].strip(): line.split("│")[5].strip() for line in result.out.splitlines()
             if line.startswith("│")}
    assert ranks == {"stem.0": "-", "conv.0": "13 (whitened)", "block.dw.0": "-", "block.pw.0": "8 (fisher_whitened)",
                     "head": "-"}  # conv.0: ⌊0.5·32·144/176⌋ = 13
    layers = json.loads((tmp_path / "layers.json").read_text())
    assert layers["conv.0"]["lowrank"] == {"rank": None, "rank_ratio": 0.5, "method": "whitened", "damping": 0.01,
                                           "input_drift": False, "drift_ridge": None, "resolved_rank": 13}
    assert layers["head"]["lowrank"] is None


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """The example recipe applied by the library pipeline on 128 calibration digits, and saved."""
    from compress.checkpoint.format import save_checkpoint
    from compress.pipeline.apply import apply_recipe_
    from compress.pipeline.inputs import first_samples
    from compress.data.spec import load_data

    recipe = load_recipe(str(RECIPE))
    model = build_model(recipe.model["spec"])
    calibration = first_samples(load_data(recipe.data["calibration"], None, "train"), 128)
    heldout = first_samples(load_data(recipe.data["calibration"], None, "heldout"), 256)
    result = apply_recipe_(model, recipe, calibration, None, heldout)
    out = tmp_path_factory.mktemp("lowrank") / "ckpt"
    save_checkpoint(model, result.checkpoint_info(), out)
    return model.eval(), result, out, heldout


def test_applied_recipe_factorises_and_quantizes_both_factors(applied) -> None:
    model, result, _, _ = applied
    records = result.outcome.lowrank.layers
    assert {name: r.rank for name, r in records.items()} == {"conv.0": 13, "block.pw.0": 8}
    for name, record in records.items():
        factorised = model.get_submodule(name)
        assert isinstance(factorised, nn.Sequential) and len(factorised) == 2
        assert record.params_after < record.params_before
        assert record.output_error is not None and record.output_error >= 0
        assert f"{name}.0" in result.outcome.quant.layers and f"{name}.1" in result.outcome.quant.layers
        assert name not in result.outcome.quant.layers
    assert result.outcome.lowrank.layers["block.pw.0"].settings == LowRankSettings(rank=8, method="fisher_whitened")


def test_checkpoint_reloads_factorised_model_to_equal_outputs(applied) -> None:
    from compress.checkpoint.format import load_checkpoint

    model, result, out, heldout = applied
    reloaded, info = load_checkpoint(out)
    assert info.lowrank == result.outcome.lowrank.to_dict()
    inputs = heldout.inputs[0][:64]
    with torch.no_grad():
        assert torch.equal(reloaded(inputs), model(inputs))


def test_ort_export_has_two_nodes_per_factorised_layer_and_parity(applied, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from compress.backends.ort.parity import measure_parity
    from compress.export.onnx_qdq import export_onnx

    model, _, _, heldout = applied
    path = export_onnx(model, (heldout.inputs[0][:1],), tmp_path / "model.onnx", "ort")
    weights = {init.name for init in onnx.load(str(path)).graph.initializer}
    for name in ("conv.0", "block.pw.0"):
        assert {f"{name}.0.weight", f"{name}.1.weight"} <= weights, sorted(weights)
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "MatMul", "Gemm", "QLinearConv",
                                                                          "QLinearMatMul", "ConvInteger", "MatMulInteger")]
    assert len(nodes) == 5 + 2, [n.op_type for n in nodes]  # five layers, two of them in two
    parity = measure_parity(model, path, [batch.inputs for batch in heldout.batches(128)])
    assert parity.max_error_steps <= 1.0, f"max error {parity.max_error_steps:.3f} output steps"
    assert parity.top1_agreement >= 0.99


@pytest.mark.parametrize("wide, narrow", [(nn.Linear(20, 12), nn.Linear(16, 10)),
                                          (nn.Conv2d(6, 12, 3, padding=1), nn.Conv2d(4, 10, 3, padding=1))])
def test_structure_is_restored_at_the_recorded_pruned_width(wide: nn.Module, narrow: nn.Module) -> None:
    """A layer channel-pruned before it was factorised reloads at its saved (narrow) shape."""
    from compress.lowrank.apply import apply_lowrank_, restore_structure_

    torch.manual_seed(0)
    pruned = nn.Sequential(narrow)
    records = apply_lowrank_(pruned, {"0": LowRankSettings(rank=3, method="svd")})
    fresh = restore_structure_(nn.Sequential(wide), records)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    inputs = torch.randn(2, 16) if isinstance(narrow, nn.Linear) else torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        assert torch.equal(fresh(inputs), pruned(inputs))
