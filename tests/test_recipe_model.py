"""Recipes checked against their model (builtin:mnist-cnn: stem.0, conv.0, block.dw.0 depthwise,
block.pw.0 1x1, head Linear 1568 -> 10); the example recipes; plans are valid recipes."""

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compress.errors import ConfigError, InputError
from compress.models.spec import build_model
from compress.recipe.check import check_against_model, compressible_layers
from compress.recipe.schema import load_recipe, parse_recipe

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
MINIMAL = {"version": 1, "model": {"spec": "builtin:mnist-cnn"}, "data": {"calibration": "builtin:mnist5k"}}


@pytest.fixture(scope="module")
def mnist_cnn():
    return build_model("builtin:mnist-cnn")


def problems(model, quantization: dict | None = None, pruning: dict | None = None) -> list[str]:
    payload = {**MINIMAL, "quantization": {"layers": quantization or {}}, "pruning": {"layers": pruning or {}}}
    return check_against_model(parse_recipe(payload, "r"), model)


def test_the_layers_are_the_conv_and_linear_modules(mnist_cnn) -> None:
    assert list(compressible_layers(mnist_cnn)) == ["stem.0", "conv.0", "block.dw.0", "block.pw.0", "head"]


def test_every_problem_against_the_model_at_once(mnist_cnn) -> None:
    quantization = {"default": {"weight_bits": 8}, "nope": {"weight_bits": 4}, "re:zzz.*": {"weight_bits": 4},
                    "conv.1": {"weight_bits": 4}, "block": {"weight_bits": 4}, "re:head": {"weight_bits": 3},
                    "head": {"weight_bits": 4}, "conv.0": {"act_bits": None, "weight_block": 16}}
    pruning = {"stem.0": {"ratio": 0.5, "pattern": "2:4"}, "re:block\\..*": {"ratio": 0.5, "pattern": "2:4"}}
    assert problems(mnist_cnn, quantization, pruning) == [
        "quantization.layers.nope: no such module in the model",
        "quantization.layers.re:zzz.*: matches no Conv2d/Linear layer",
        "quantization.layers.conv.1: is a BatchNorm2d, not a Conv2d/Linear layer",
        "quantization.layers.block: is a DepthwiseResidual, not a Conv2d/Linear layer",
        "quantization.layers.re:head: every layer it matches has its own rule (head)",
        "quantization.layers.conv.0: conv.0 is a Conv2d; act_dynamic and weight_block apply to Linear only",
        # reduction sizes: stem 1·3·3 = 9, depthwise 1·3·3 = 9 (refused), pointwise 32 (fine)
        "pruning.layers.stem.0: pattern '2:4' is not allowed here: the reduction size (inputs per output) is 9, "
        "not a multiple of 4 (allowed: unstructured, channel)",
        "pruning.layers.re:block\\..* (for block.dw.0): pattern '2:4' is not allowed here: the reduction size "
        "(inputs per output) is 9, not a multiple of 4 (allowed: unstructured, channel)",
    ]


def test_block_size_must_divide_the_input_features(mnist_cnn) -> None:
    quantization = {"head": {"weight_bits": 4, "act_bits": None, "weight_block": 64}}  # 1568 = 24.5 · 64
    assert problems(mnist_cnn, quantization) == [
        "quantization.layers.head: head: input features 1568 are not a multiple of weight_block 64"]
    assert problems(mnist_cnn, {"head": {"weight_bits": 4, "act_bits": None, "weight_block": 32}}) == []


def test_a_valid_recipe_has_no_problems_and_float_layers_are_left_out(mnist_cnn) -> None:
    quantization = {"default": {"weight_bits": 8}, "re:block\\..*": {"weight_bits": 4},
                    "head": {"weight_bits": None, "act_bits": None}}
    pruning = {"conv.0": {"ratio": 0.5, "pattern": "2:4"}, "block.pw.0": {"ratio": 0.25, "pattern": "channel"}}
    assert problems(mnist_cnn, quantization, pruning) == []
    recipe = parse_recipe({**MINIMAL, "quantization": {"layers": quantization}}, "r")
    chosen = recipe.quant_settings(compressible_layers(mnist_cnn))
    assert {name: s.weight_bits for name, s in chosen.items()} == {"stem.0": 8, "conv.0": 8, "block.dw.0": 4,
                                                                  "block.pw.0": 4}


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_example_recipes_are_valid_for_their_models(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#") and f"compress apply recipes/{path.name} -o " in text  # what it does, how to run it
    recipe = load_recipe(str(path))
    model = build_model(recipe.model["spec"], recipe.model.get("weights"))
    assert check_against_model(recipe, model) == []
    assert recipe.quant_settings(compressible_layers(model))  # every example quantizes something


def test_a_plan_of_compress_plan_is_a_valid_recipe(cli, tmp_path: Path) -> None:
    output = tmp_path / "plan.yaml"
    result = cli("plan", "builtin:mnist-cnn", "--data", "builtin:mnist5k", "--max-samples", "64",
                 "--max-products", "10", "--max-seconds", "5", "--budget", "size_mb=0.010", "--bits", "4,8",
                 "--sparsities", "0,0.5", "--patterns", "unstructured,2:4", "--sensitivity", "trace",
                 "-o", str(output))
    assert result.code == 0, result.err
    recipe = load_recipe(str(output))
    written = yaml.safe_load(output.read_text())
    assert recipe.to_dict() == written  # plan_recipe wrote the schema's own form
    assert check_against_model(recipe, build_model("builtin:mnist-cnn")) == []
    assert set(recipe.quantization) == set(written["plan"]["layers"])  # every layer by exact name
    assert recipe.pruning and all(rule["ratio"] > 0 for rule in recipe.pruning.values())
    assert cli("validate", str(output)).code == 0


def test_channel_pruning_is_checked_per_group_of_coupled_channels(mnist_cnn) -> None:
    # conv.0, block.dw.0 and block.pw.0 feed one residual add: one group, named conv.0
    assert problems(mnist_cnn, pruning={"default": {"ratio": 0.25, "pattern": "channel"}}) == [
        "pruning.layers.default (for head): pattern 'channel' is not allowed here: channel group head must be "
        "left alone (model output) (allowed: unstructured, 2:4, or a null rule)"]
    assert problems(mnist_cnn, pruning={"default": {"ratio": 0.25, "pattern": "channel"}, "head": None}) == []
    differ = {"conv.0": {"ratio": 0.5, "pattern": "channel"}, "re:block\\..*": {"ratio": 0.25, "pattern": "channel"}}
    assert problems(mnist_cnn, pruning=differ) == [
        "pruning.layers.conv.0, pruning.layers.re:block\\..*: layers conv.0, block.dw.0, block.pw.0 "
        "share channel group conv.0 but ask for different pruning (allowed: the same settings for all of them)"]


QUANT_VALUES = {"weight_bits": [2, 4, 8, None], "act_bits": [8, None], "act_signed": [True, False],
                "calibrator": ["minmax", "mse"], "learnable_scales": [True, False], "act_dynamic": [True, False],
                "weight_block": [None, 16, 32]}
PRUNE_VALUES = {"ratio": [0.0, 0.25, 0.5], "pattern": ["unstructured", "2:4", "channel"],
                "criterion": ["magnitude", "obs"], "round_to": [None, 4]}
NAMES = st.sampled_from(["default", "stem.0", "conv.0", "block.dw.0", "block.pw.0", "head", "re:.*", "re:conv.*",
                         "re:block.*", "block", "nope"])


def rule_tables(values: dict) -> st.SearchStrategy:
    fields = st.fixed_dictionaries({}, optional={key: st.sampled_from(pool) for key, pool in values.items()})
    return st.dictionaries(NAMES, st.one_of(st.none(), fields), max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(quantization=rule_tables(QUANT_VALUES), pruning=rule_tables(PRUNE_VALUES),
       targets=st.one_of(st.lists(st.sampled_from(["ort", "tensorrt", "tpu"]), unique=True), st.just(1.5)))
def test_any_rules_give_problems_never_a_crash(mnist_cnn, quantization, pruning, targets) -> None:
    payload = {**MINIMAL, "quantization": {"layers": quantization}, "pruning": {"layers": pruning},
               "export": {"targets": targets}}
    try:
        recipe = parse_recipe(payload, "r")
    except ConfigError:
        return
    layers = compressible_layers(mnist_cnn)
    problems = check_against_model(recipe, mnist_cnn)
    assert all(problem.startswith(("quantization.layers.", "pruning.layers.")) for problem in problems), problems
    if not problems:  # valid: the stage configs build for every layer
        recipe.quant_settings(layers), recipe.prune_settings(layers)
