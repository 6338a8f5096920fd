"""The recipe schema: every problem at once with its path, rule precedence, round trip, the
example recipes, and plans written by `compress plan` are valid recipes."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.errors import UserError
from compress.recipe.rules import resolve, resolve_all
from compress.recipe.schema import load_recipe, parse_recipe

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
MINIMAL = {"version": 1, "model": {"spec": "builtin:mnist-cnn"}, "data": {"calibration": "builtin:mnist5k"}}


def problems_of(payload: dict) -> list[str]:
    with pytest.raises(UserError) as error:
        parse_recipe(payload, "r.yaml")
    return [line.strip() for line in str(error.value).splitlines()[1:]]


def test_every_problem_is_reported_at_once_with_its_path_value_and_what_is_allowed() -> None:
    payload = {"version": 2, "model": {"colour": "red"}, "data": {"calibration": 3},
               "quantization": {"layers": {"default": {"weight_bits": 9}, "re:[": {"weight_bits": 4},
                                           "head": {"calibrator": "magic", "bits": 4}}},
               "pruning": {"layers": {"conv.0": {"ratio": 1.5}}, "saliency": "vibes"},
               "finetune": {"mode": "sideways"}, "export": {"targets": ["tpu"]}, "extra": 1}
    problems = problems_of(payload)
    expected = ["version: 2 is not supported", "model.spec: missing", "model.colour: unknown key", "data.calibration: 3 is not allowed",
                "quantization.layers.default.weight_bits: weight_bits 9 is not allowed (allowed: 2..8",
                "quantization.layers.re:[: invalid regular expression",
                "quantization.layers.head.calibrator: calibrator 'magic' is not allowed",
                "quantization.layers.head.bits: unknown key", "pruning.layers.conv.0.ratio: ratio 1.5",
                "pruning.saliency: 'vibes' is not allowed", "finetune.mode:", "export.targets:", "extra: unknown key"]
    for text in expected:
        assert any(text in p for p in problems), (text, problems)
    assert len(problems) == len(expected)


def test_combinations_and_targets() -> None:
    layers = {"default": {"weight_bits": 4, "act_bits": None, "weight_block": 32}, "head": {"act_bits": 8}}
    problems = problems_of({**MINIMAL, "quantization": {"layers": layers}})
    assert problems == ["quantization.layers.head: this combination is not allowed: weight_block needs "
                        "weight_bits, act_bits None (float activations) and fixed scales"]
    asymmetric = {**MINIMAL, "quantization": {"layers": {"default": {"act_signed": False}}},
                  "export": {"targets": ["tensorrt"]}}
    assert "TensorRT needs symmetric int8" in problems_of(asymmetric)[0]


def test_precedence_exact_over_pattern_over_default_and_null_rules() -> None:
    rules = {"default": {"weight_bits": 8}, "re:conv.*": {"weight_bits": 4}, "re:c.*": {"weight_bits": 2},
             "conv.0": {"act_bits": None}, "head": None}
    assert resolve(rules, "conv.0") == {"weight_bits": 8, "act_bits": None}  # exact: merged over the default
    assert resolve(rules, "conv.1") == {"weight_bits": 4}  # the first matching pattern
    assert resolve(rules, "stem") == {"weight_bits": 8}
    assert resolve(rules, "head") is None
    assert set(resolve_all(rules, ["conv.0", "head", "stem"])) == {"conv.0", "stem"}


@settings(max_examples=30, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 8, None]), ratio=st.floats(0, 0.95), epochs=st.integers(1, 5),
       pattern=st.sampled_from(["unstructured", "channel"]))
def test_round_trip(bits, ratio, epochs, pattern) -> None:
    payload = {**MINIMAL, "quantization": {"layers": {"default": {"weight_bits": bits, "act_bits": None}}},
               "pruning": {"layers": {"re:conv.*": {"ratio": ratio, "pattern": pattern}}},
               "finetune": {"mode": "kd", "epochs": epochs}}
    recipe = parse_recipe(payload, "r")
    again = parse_recipe(yaml.safe_load(yaml.safe_dump(recipe.to_dict())), "r")
    assert again == recipe and again.to_dict() == recipe.to_dict()


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nmodel: {spec: x\n  data: [")
    with pytest.raises(UserError, match="line 3"):
        load_recipe(str(path))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_example_recipes_are_valid_for_their_models(cli, path: Path) -> None:
    assert path.read_text().startswith("#")  # each says what it does and how to run it
    result = cli("validate", str(path))
    assert result.code == 0, result.err


def test_validate_against_the_model(cli, tmp_path: Path) -> None:
    recipe = {**MINIMAL, "quantization": {"layers": {"nope": {"weight_bits": 4}, "re:zzz.*": {"weight_bits": 4},
                                                     "conv.1": {"weight_bits": 4}}},
              "pruning": {"layers": {"stem.0": {"ratio": 0.5, "pattern": "2:4"}}}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = cli("validate", str(path))
    assert result.code == 2
    for text in ("quantization.layers.nope: no such module", "quantization.layers.re:zzz.*: matches no",
                 "quantization.layers.conv.1: is a BatchNorm2d", "2:4 needs a reduction size divisible by 4"):
        assert text in result.err, result.err
    assert cli("validate", str(path), "--no-model").code == 0
