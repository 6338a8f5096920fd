"""`compress apply`: a recipe becomes a compressed checkpoint that reloads without the recipe,
with the same outputs; existing work is never replaced silently."""

import json
from pathlib import Path

import torch
import yaml

RECIPE = {
    "version": 1,
    "model": {"spec": "builtin:mnist-cnn"},
    "data": {"calibration": "builtin:mnist5k", "calibration_samples": 128},
    "quantization": {"layers": {"default": {"weight_bits": 8, "act_bits": 8, "act_signed": False},
                                "head": {"weight_bits": 4}}},
    "pruning": {"layers": {"conv.0": {"ratio": 0.5, "pattern": "channel", "round_to": 8},
                           "head": {"ratio": 0.5}}},
    "finetune": {"mode": "qat+kd", "max_steps": 4, "lr": 0.01, "batch_size": 32, "sharpness_every": 0,
                 "checkpoint_every": 2},
}


def test_apply_writes_a_checkpoint_that_reloads_without_the_recipe(cli, tmp_path: Path) -> None:
    from compress.checkpoint.load import load_model
    from compress.data.spec import load_data

    recipe, out = tmp_path / "r.yaml", tmp_path / "out"
    recipe.write_text(yaml.safe_dump(RECIPE))
    result = cli("apply", str(recipe), "-o", str(out), "--json", str(tmp_path / "apply.json"))
    assert result.code == 0, result.err
    info = json.loads((out / "compressed.json").read_text())
    assert json.loads((tmp_path / "apply.json").read_text()) == info  # --json: the checkpoint's JSON as written
    assert info["prune"]["groups"]["conv.0"]["kept"] == 16 and info["finetune"]["steps"] == 4
    model = load_model(str(out))  # no recipe needed
    assert model.conv[0].weight.shape[0] == 16 and model.block.dw[0].weight.shape[0] == 16
    assert float((model.head.weight == 0).float().mean()) >= 0.5
    digits = load_data("builtin:mnist5k", "heldout", "heldout")
    evaluated = cli("eval", str(out), "--data", "builtin:mnist5k", "--json", str(tmp_path / "eval.json"))
    assert evaluated.code == 0, evaluated.err
    after = info["evaluation"]["after"]
    assert json.loads((tmp_path / "eval.json").read_text())["accuracy"] == after["accuracy"]
    assert after["size_mb"] < 0.5 * info["evaluation"]["before"]["size_mb"]
    again = load_model(str(out))
    with torch.no_grad():
        assert torch.equal(model(digits.inputs[0][:64]), again(digits.inputs[0][:64]))


def test_apply_never_replaces_work_silently(cli, tmp_path: Path) -> None:
    recipe, out = tmp_path / "r.yaml", tmp_path / "out"
    recipe.write_text(yaml.safe_dump({**RECIPE, "pruning": {}, "finetune": None}))
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = cli("apply", str(recipe), "-o", str(out))
    assert refused.code == 2 and "--resume" in refused.err and "--force" in refused.err
    nothing = cli("apply", str(recipe), "-o", str(out), "--resume")
    assert nothing.code == 2 and "nothing to resume" in nothing.err
    assert cli("apply", str(recipe), "-o", str(out), "--force").code == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "weights.safetensors").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**RECIPE, "quantization": {"layers": {"nope": {"weight_bits": 4}}}}))
    invalid = cli("apply", str(bad), "-o", str(tmp_path / "other"))
    assert invalid.code == 2 and "no such module" in invalid.err and not (tmp_path / "other").exists()
