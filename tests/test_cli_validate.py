"""`compress validate`: exit 0 with each layer's resolved settings, or exit 2 with every problem
(schema and model) at once; --no-model; --json; YAML syntax errors by line."""

import json
from pathlib import Path

import yaml

MIXED = Path(__file__).parents[1] / "recipes" / "mnist-cnn-mixed-qat-kd.yaml"
MINIMAL = {"version": 1, "model": {"spec": "builtin:mnist-cnn"}, "data": {"calibration": "builtin:mnist5k"}}


def write(tmp_path: Path, payload: dict) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(payload))
    return str(path)


def test_a_valid_recipe_prints_each_layer_and_writes_json(cli, tmp_path: Path) -> None:
    result = cli("validate", str(MIXED), "--json", str(tmp_path / "layers.json"))
    assert result.code == 0, result.err
    assert "valid for builtin:mnist-cnn" in result.out
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:5]]
            for line in result.out.splitlines() if line.startswith("│")}
    assert rows == {"stem.0": ["int8", "uint8", "-"], "conv.0": ["int4", "uint8", "-"],
                    "block.dw.0": ["int8", "uint8", "-"], "block.pw.0": ["int4", "uint8", "-"],
                    "head": ["int3", "uint8", "-"]}
    layers = json.loads((tmp_path / "layers.json").read_text())
    assert {name: layer["quantization"]["weight_bits"] for name, layer in layers.items()} == {
        "stem.0": 8, "conv.0": 4, "block.dw.0": 8, "block.pw.0": 4, "head": 3}
    assert layers["head"] == {"quantization": {"weight_bits": 3, "act_bits": 8, "act_signed": False,
                                               "calibrator": "minmax", "percentile": 99.99, "learnable_scales": False,
                                               "act_dynamic": False, "weight_block": None, "method": "gptq",
                                               "damp": 0.01, "block_size": 128, "act_order": True,
                                               "loss_aware": False, "input_drift": True, "symmetric": True}, "pruning": None, "lowrank": None}


def test_schema_problems_all_at_once_exit_2(cli, tmp_path: Path) -> None:
    path = write(tmp_path, {**MINIMAL, "quantization": {"layers": {"default": {"weight_bits": 9}, "re:(": None}},
                            "pruning": {"layers": {"head": {"ratio": -0.1}}}, "colour": "red"})
    result = cli("validate", path)
    assert result.code == 2 and result.out == ""
    assert result.err.splitlines() == [
        f"compress validate: error: {path}: 4 problems",
        "  colour: unknown key (allowed: version, model, data, quantization, pruning, lowrank, finetune, export, plan)",
        "  quantization.layers.default.weight_bits: 9 is not allowed (allowed: 2..8 or null)",
        "  quantization.layers.re:(: invalid regular expression (missing ), unterminated subpattern at position 0)",
        "  pruning.layers.head.ratio: -0.1 is not allowed (allowed: 0 <= ratio < 1)",
    ]


def test_model_problems_exit_2_unless_no_model(cli, tmp_path: Path) -> None:
    path = write(tmp_path, {**MINIMAL, "quantization": {"layers": {"nope": {"weight_bits": 4}}},
                            "pruning": {"layers": {"stem.0": {"ratio": 0.5, "pattern": "2:4"}}}})
    result = cli("validate", path)
    assert result.code == 2
    assert result.err.splitlines() == [
        f"compress validate: error: {path} with model builtin:mnist-cnn: 2 problems",
        "  quantization.layers.nope: no such module in the model",
        "  pruning.layers.stem.0: pattern '2:4' is not allowed here: the reduction size (inputs per output) is 9, "
        "not a multiple of 4 (allowed: unstructured, channel)",
    ]
    schema_only = cli("validate", path, "--no-model")
    assert schema_only.code == 0 and "valid (schema only" in schema_only.out
    rows = [line.split("│")[1].strip() for line in schema_only.out.splitlines() if line.startswith("│")]
    assert rows == ["nope", "stem.0"]
    no_json = cli("validate", path, "--no-model", "--json", str(tmp_path / "x.json"))
    assert no_json.code == 2 and "needs the model" in no_json.err and not (tmp_path / "x.json").exists()


def test_yaml_syntax_and_missing_files_are_one_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nmodel:\n  spec: [builtin:mnist-cnn\n")
    result = cli("validate", str(path))
    assert result.code == 2 and len(result.err.splitlines()) == 1 and "not valid YAML at line 4" in result.err
    missing = cli("validate", str(tmp_path / "missing.yaml"))
    assert missing.code == 2 and "cannot read recipe" in missing.err and "No such file" in missing.err


def test_an_unknown_model_is_one_line(cli, tmp_path: Path) -> None:
    result = cli("validate", write(tmp_path, {**MINIMAL, "model": {"spec": "builtin:nope"}}))
    assert result.code == 2 and result.err.startswith(f"compress validate: error: {tmp_path / 'r.yaml'}: model: ")
    assert len(result.err.splitlines()) == 1 and "unknown builtin model 'nope'" in result.err
