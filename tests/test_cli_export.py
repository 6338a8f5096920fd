"""`compress export`: every example recipe, applied (fine-tuning shortened to two steps) and exported
for each of its targets, passes parity (≤ 1 output step, ≥ 99.9% top-1 agreement) and its target's
checks; ORT exports run fused integer kernels."""

import json
from pathlib import Path

import onnx
import pytest
import yaml

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


def shortened(path: Path, tmp_path: Path) -> Path:
    recipe = yaml.safe_load(path.read_text())
    recipe["data"]["calibration_samples"] = 128
    if recipe.get("finetune"):
        recipe["finetune"].update(max_steps=2, lr=0.001)
    short = tmp_path / path.name
    short.write_text(yaml.safe_dump(recipe))
    return short


def uint8_activations(path: Path) -> bool:
    """Whether every rule quantizes activations to uint8 (act_bits defaults to 8, act_signed to true)."""
    rules = yaml.safe_load(path.read_text())["quantization"]["layers"]
    merged = [{**(rules.get("default") or {}), **rule} for rule in rules.values() if rule]
    return all(rule.get("act_bits", 8) is not None and rule.get("act_signed", True) is False for rule in merged)


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if "minilm" in p.name else p
                                  for p in RECIPES], ids=[p.stem for p in RECIPES])
def test_every_recipe_exports_with_parity(cli, path: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    applied = cli("apply", str(shortened(path, tmp_path)), "-o", str(checkpoint))
    assert applied.code == 0, applied.err
    for target in yaml.safe_load(path.read_text())["export"]["targets"]:
        summary_path = tmp_path / f"{target}.json"
        result = cli("export", str(checkpoint), "--target", target, "-o", str(tmp_path / target),
                     "--json", str(summary_path))
        assert result.code == 0, result.err
        summary = json.loads(summary_path.read_text())
        parity = summary["parity"]
        assert parity["top1_agreement"] >= 0.999 and parity["max_error_steps"] <= 1.0, parity
        onnx_file = Path(summary["onnx"])
        proto = onnx.load(str(onnx_file))  # measured sizes: the file's, and its initializers' serialized bytes
        assert summary["size"]["file_bytes"] == onnx_file.stat().st_size
        assert summary["size"]["weight_bytes"] == sum(len(t.SerializeToString()) for t in proto.graph.initializer)
        assert json.loads(onnx_file.with_suffix(".parity.json").read_text())["file_bytes"] == onnx_file.stat().st_size
        if target == "ort":
            assert sum(summary["fusion"]["fused"].values()) >= 1
            if uint8_activations(path):  # ORT fuses every layer (signed int8 leaves the depthwise conv
                assert not summary["fusion"]["float_layers"]  # float on x86; weight-only layers stay float)
        if target == "tensorrt":
            assert summary["tensorrt"]["rules"] == "passed"
            assert summary["tensorrt"]["engine"]["status"] in ("built", "skipped")


def test_export_refuses_what_is_not_a_checkpoint_and_existing_output(cli, tmp_path: Path) -> None:
    missing = cli("export", str(tmp_path), "-o", str(tmp_path / "x"))
    assert missing.code == 2 and "not a compressed checkpoint" in missing.err
