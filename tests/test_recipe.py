"""The recipe schema: every problem at once, each with its key path, the bad value and what is
allowed; every kind of problem on its own; combinations; round trip; YAML syntax errors."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.errors import ConfigError, InputError
from compress.finetune.spec import FinetuneSpec
from compress.prune.records import PruneSettings
from compress.quant.records import QuantSettings
from compress.recipe.schema import Recipe, load_recipe, parse_recipe

MINIMAL = {"version": 1, "model": {"spec": "builtin:mnist-cnn"}, "data": {"calibration": "builtin:mnist5k"}}


def problems_of(payload: dict) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_recipe(payload, "r.yaml")
    lines = str(error.value).splitlines()
    count = len(lines) - 1
    assert lines[0] == f"r.yaml: {count} problem{'s' if count > 1 else ''}"
    return [line.strip() for line in lines[1:]]


def with_rules(quantization: dict | None = None, pruning: dict | None = None, **sections) -> dict:
    return {**MINIMAL, "quantization": {"layers": quantization or {}}, "pruning": {"layers": pruning or {}},
            **sections}


def test_every_problem_is_reported_at_once_with_its_path_value_and_what_is_allowed() -> None:
    payload = {"version": 2, "model": {"colour": "red"}, "data": {"calibration": 3},
               "quantization": {"layers": {"default": {"weight_bits": 9}, "re:[": {"weight_bits": 4},
                                           "head": {"calibrator": "magic", "bits": 4}}},
               "pruning": {"layers": {"conv.0": {"ratio": 1.5}}, "saliency": "vibes"},
               "finetune": {"mode": "sideways"}, "export": {"targets": ["tpu"]}, "extra": 1}
    assert sorted(problems_of(payload)) == sorted([
        "extra: unknown key (allowed: version, model, data, quantization, pruning, lowrank, finetune, export, plan)",
        "version: 2 is not supported (allowed: 1)",
        "model.colour: unknown key (allowed: spec, weights, task)",
        "model.spec: missing (required)",
        "data.calibration: 3 is not allowed (allowed: a spec string)",
        "quantization.layers.default.weight_bits: 9 is not allowed (allowed: 2..8 or null)",
        "quantization.layers.re:[: invalid regular expression (unterminated character set at position 0)",
        "quantization.layers.head.bits: unknown key (allowed: weight_bits, act_bits, act_signed, calibrator, "
        "percentile, learnable_scales, act_dynamic, weight_block, method, damp, block_size, act_order, loss_aware, input_drift, symmetric)",
        "quantization.layers.head.calibrator: 'magic' is not allowed (allowed: minmax, percentile, mse)",
        "pruning.layers.conv.0.ratio: 1.5 is not allowed (allowed: 0 <= ratio < 1)",
        "pruning.saliency: 'vibes' is not allowed (allowed: fisher, empirical-fisher, hutchinson)",
        "finetune.mode: 'sideways' is not allowed (allowed: none, qat, kd, qat+kd)",
        "export.targets: ['tpu'] is not allowed (allowed: a list of onnx, ort, tensorrt, hf)",
    ])


@pytest.mark.parametrize("payload, problem", [
    # wrong types: refused before a config's range check could let them through
    (with_rules({"default": {"weight_bits": 4.5}}),
     "quantization.layers.default.weight_bits: 4.5 is not allowed (allowed: an integer or null)"),
    (with_rules({"head": {"learnable_scales": "yes"}}),
     "quantization.layers.head.learnable_scales: 'yes' is not allowed (allowed: true or false)"),
    (with_rules({"head": {"method": "awq"}}),
     "quantization.layers.head.method: 'awq' is not allowed (allowed: rtn, gptq)"),
    (with_rules(pruning={"head": {"ratio": 0.5, "pattern": "channel", "criterion": "sparsegpt"}}),
     "pruning.layers.head: this combination is not allowed: criterion sparsegpt is not allowed for channel pruning (allowed: magnitude, obs)"),
    (with_rules(pruning={"head": {"ratio": "half"}}), "pruning.layers.head.ratio: 'half' is not allowed (allowed: a number)"),
    (with_rules({"head": 8}), "quantization.layers.head: 8 is not allowed (allowed: null or a mapping of weight_bits, "
     "act_bits, act_signed, calibrator, percentile, learnable_scales, act_dynamic, weight_block, method, damp, block_size, act_order, loss_aware, input_drift, symmetric)"),
    ({**MINIMAL, "quantization": [1]}, "quantization: [1] is not allowed (allowed: a mapping with keys layers)"),
    ({**MINIMAL, "model": {"spec": "x", "weights": 7}}, "model.weights: 7 is not allowed (allowed: a spec string)"),
    ({**MINIMAL, "data": {"calibration": "x", "calibration_samples": 0}},
     "data.calibration_samples: 0 is not allowed (allowed: an integer >= 1)"),
    ({**MINIMAL, "finetune": "qat"}, "finetune: 'qat' is not allowed (allowed: null or a mapping)"),
    ({**MINIMAL, "finetune": {"lr": "fast"}}, "finetune.lr: 'fast' is not allowed (allowed: 'auto' or > 0)"),
    ({**MINIMAL, "finetune": {"epochs": True}}, "finetune.epochs: true is not allowed (allowed: an integer)"),
    ({**MINIMAL, "finetune": {"kd_weight": 2}}, "finetune.kd_weight: 2 is not allowed (allowed: in [0, 1])"),
    ({**MINIMAL, "finetune": {"mode": "none", "epochs": 0}},
     "finetune.epochs: 0 is not allowed (allowed: an integer >= 1)"),
    ({**MINIMAL, "export": {"batch_sizes": [True]}},
     "export.batch_sizes: [true] is not allowed (allowed: a list of integers >= 1)"),
    ({**MINIMAL, "export": {"targets": "ort", "batch_sizes": [1]}},
     "export.targets: 'ort' is not allowed (allowed: a list of onnx, ort, tensorrt, hf)"),
    ({**MINIMAL, "version": None}, "version: null is not supported (allowed: 1)"),
    ({**MINIMAL, "plan": [1, 2]}, "plan: [1, 2] is not allowed (allowed: a mapping)"),
    ({**MINIMAL, "model": {}}, "model.spec: missing (required)"),
    # values out of range
    (with_rules({"default": {"act_bits": 4}}), "quantization.layers.default.act_bits: 4 is not allowed (allowed: 8 or null)"),
    (with_rules({"default": {"percentile": 40.0}}),
     "quantization.layers.default.percentile: 40.0 is not allowed (allowed: 50 < p <= 100)"),
    (with_rules(pruning={"re:conv.*": {"ratio": 0.5, "pattern": "3:4"}}),
     "pruning.layers.re:conv.*.pattern: '3:4' is not allowed (allowed: unstructured, 2:4, channel)"),
    (with_rules(pruning={"head": {"ratio": 0.5, "criterion": "random"}}),
     "pruning.layers.head.criterion: 'random' is not allowed (allowed: magnitude, obs, wanda, sparsegpt)"),
    (with_rules(pruning={"conv.0": {"pattern": "2:4"}}), "pruning.layers.conv.0.ratio: missing (required)"),
    (with_rules(pruning={"default": {"pattern": "channel"}}), "pruning.layers.default.ratio: missing (required)"),
    (with_rules(pruning={"stem": {}}), "pruning.layers.stem.ratio: missing (required)"),
    (with_rules(pruning={"default": None, "head": {"criterion": "obs"}}),
     "pruning.layers.head.ratio: missing (required)"),
    (with_rules(pruning={"default": {"criterion": "obs"}, "head": {"pattern": "2:4", "ratio": 0.5}}),
     "pruning.layers.default.ratio: missing (required)"),
    (with_rules({"re:(": {"weight_bits": 4}}),
     "quantization.layers.re:(: invalid regular expression (missing ), unterminated subpattern at position 0)"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_each_kind_of_problem(payload: dict, problem: str) -> None:
    assert problems_of(payload) == [problem]


def test_rule_combinations_are_judged_merged_over_the_default() -> None:
    # the head's act_bits 8 is fine alone, but not with the default's 4-bit weight blocks
    rules = {"default": {"weight_bits": 4, "act_bits": None, "weight_block": 32}, "head": {"act_bits": 8}}
    assert problems_of(with_rules(rules)) == [
        "quantization.layers.head: this combination is not allowed: weight_block needs weight_bits, "
        "act_bits null (float activations) and fixed scales"]
    # a default that is wrong by itself is reported once, at the default
    rules = {"default": {"weight_bits": None, "learnable_scales": True}, "head": {"act_bits": None}}
    assert problems_of(with_rules(rules)) == [
        "quantization.layers.default: this combination is not allowed: learnable_scales needs weight_bits "
        "(float weights have no scale to learn)"]
    assert problems_of(with_rules(pruning={"conv.0": {"ratio": 0.3, "pattern": "2:4"}})) == [
        "pruning.layers.conv.0: this combination is not allowed: ratio 0.3 is not allowed for 2:4 "
        "(it always prunes half: use 0.5)"]


def test_asymmetric_activations_are_ort_only() -> None:
    asymmetric = with_rules({"default": {"act_signed": False}})
    assert parse_recipe({**asymmetric, "export": {"targets": ["ort"]}}, "r").export["targets"] == ["ort"]
    assert problems_of({**asymmetric, "export": {"targets": ["ort", "tensorrt"]}}) == [
        "quantization.layers.default.act_signed: false is not allowed with the tensorrt target (allowed: true; "
        "TensorRT needs symmetric int8)"]


def test_a_minimal_recipe_takes_the_defaults() -> None:
    recipe = parse_recipe(MINIMAL, "r")
    assert recipe.quantization == recipe.pruning == {} and recipe.finetune is None and recipe.plan is None
    assert recipe.data == {"calibration": "builtin:mnist5k", "calibration_samples": 512}
    assert recipe.export == {"targets": ["ort"], "batch_sizes": [1]} and recipe.saliency == "fisher"
    assert recipe.finetune_spec() is None
    assert parse_recipe({**MINIMAL, "finetune": {"mode": "none", "epochs": 3}}, "r").finetune is None
    assert parse_recipe({**MINIMAL, "finetune": {}}, "r").finetune_spec() == FinetuneSpec()


def test_settings_are_the_stage_configs_resolved_per_layer() -> None:
    recipe = parse_recipe(with_rules({"default": {"weight_bits": 4}, "head": None},
                                     {"re:conv.*": {"ratio": 0.5, "pattern": "2:4"}, "stem": {"ratio": 0.0}}), "r")
    assert recipe.quant_settings(["stem", "conv", "head"]) == {"stem": QuantSettings(4), "conv": QuantSettings(4)}
    assert recipe.prune_settings(["stem", "conv", "head"]) == {"conv": PruneSettings(0.5, "2:4")}  # ratio 0: untouched


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 8, None]), act=st.sampled_from([8, None]),
       calibrator=st.sampled_from(["minmax", "percentile", "mse"]), ratio=st.floats(0, 0.95),
       pattern=st.sampled_from(["unstructured", "channel"]), epochs=st.integers(1, 5),
       lr=st.one_of(st.just("auto"), st.floats(1e-6, 1.0)), targets=st.lists(st.sampled_from(["onnx", "ort", "tensorrt"]),
                                                                             unique=True),
       plan=st.one_of(st.none(), st.dictionaries(st.text(min_size=1), st.integers())))
def test_round_trip(bits, act, calibrator, ratio, pattern, epochs, lr, targets, plan) -> None:
    payload = {**with_rules({"default": {"weight_bits": bits, "act_bits": act}, "head": {"calibrator": calibrator}},
                            {"re:conv.*": {"ratio": ratio, "pattern": pattern}, "head": None}),
               "finetune": {"mode": "kd", "epochs": epochs, "lr": lr}, "export": {"targets": targets}, "plan": plan}
    recipe = parse_recipe(payload, "r")
    again = Recipe.from_dict(yaml.safe_load(yaml.safe_dump(recipe.to_dict())))
    assert again == recipe and again.to_dict() == recipe.to_dict()


def test_to_dict_is_a_copy() -> None:
    recipe = parse_recipe(with_rules({"default": {"weight_bits": 4}}), "r")
    recipe.to_dict()["quantization"]["layers"]["default"]["weight_bits"] = 2
    assert recipe.quantization == {"default": {"weight_bits": 4}}


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nmodel: {spec: x\n  data: [")
    with pytest.raises(ConfigError) as error:
        load_recipe(str(path))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: not valid YAML at line 3, column ")


def test_a_recipe_is_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list.yaml: a recipe is a mapping with keys version, .*; got \[1, 2\]"):
        load_recipe(str(path))
    with pytest.raises(InputError, match="cannot read recipe .*missing.yaml: No such file"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_yaml_is_loaded_safely_and_strictly(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + "quantization:\n  layers:\n    head: {weight_bits: 4}\n"
                    "    head: {weight_bits: 8}\n")
    lines = path.read_text().splitlines()
    first, second = (i + 1 for i, line in enumerate(lines) if line.strip().startswith("head:"))
    with pytest.raises(ConfigError, match=rf"not valid YAML at line {second}, column 5: duplicate key 'head' "
                                        rf"\(first at line {first}\)"):
        load_recipe(str(path))
    path.write_text("version: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="could not determine a constructor for the tag"):
        load_recipe(str(path))
    path.write_text(yaml.safe_dump(MINIMAL) + "plan: {layers: {head: {trace: 1.5}}, budgets: {avg_bits: 4}}\n")
    assert load_recipe(str(path)).plan == {"layers": {"head": {"trace": 1.5}}, "budgets": {"avg_bits": 4}}
