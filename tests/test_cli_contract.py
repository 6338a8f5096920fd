"""The CLI as a thin caller: parameter names in library errors shown as flags, a missing extra
named in one line, torchtune-style recipe overrides validated like the file, ``plan --finetune``,
and a help line for every option, grouped for ``plan``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import yaml

from compress.cli.flags import with_flags
from compress.cli.main import build_parser
from compress.cli.overrides import apply_overrides
from compress.errors import InputError
from tests.helpers.factories import FACTORIES

ROOT = Path(__file__).resolve().parents[1]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_and_positional_has_help() -> None:
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, parser in _subparsers().items()
               for a in parser._actions if not a.help]
    assert not missing, f"no help line: {missing}"


def test_plan_help_is_grouped_by_what_the_options_steer() -> None:
    groups = {g.title: {a.dest for a in g._group_actions} for g in _subparsers()["plan"]._action_groups}
    assert {"curvature", "candidates", "budgets", "backend", "output"} <= set(groups)
    assert {"bits", "override"} <= groups["candidates"] and {"budget", "sweep"} <= groups["budgets"]
    assert "backend" in groups["backend"] and {"output", "finetune"} <= groups["output"]


def test_parameter_names_become_flags() -> None:
    flags = {"max_samples": "--max-samples", "force": "--force", "reference": "--reference", "data": "--data"}
    message = "max_samples must be at least 1; set force=True; give reference=MODEL; data x has no labels"
    assert with_flags(message, flags) == ("--max-samples must be at least 1; set --force; give --reference MODEL; "
                                          "data x has no labels")


def test_library_error_is_shown_with_the_flag(cli) -> None:
    result = cli("curvature", "builtin:mnist-cnn", "--data", "builtin:mnist5k", "--max-samples", "0")
    assert result.code == 2 and result.err.count("\n") == 1
    assert "--max-samples must be at least 1" in result.err and "max_samples" not in result.err


def test_missing_text_extra_is_one_line_naming_it(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    result = cli("apply", str(ROOT / "recipes" / "minilm-w4-weight-only.yaml"), "-o", str(tmp_path / "out"))
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "pip install 'compress[text]'" in result.err and "internal error" not in result.err


def test_overrides_are_yaml_scalars_at_their_paths() -> None:
    recipe = {"version": 1, "finetune": None, "data": {"calibration": "builtin:mnist5k"}}
    result = apply_overrides(recipe, ["finetune.mode=qat+kd", "finetune.epochs=1", "data.train=file.py:train",
                                      "finetune.lr=null"])
    assert result["finetune"] == {"mode": "qat+kd", "epochs": 1, "lr": None}
    assert result["data"] == {"calibration": "builtin:mnist5k", "train": "file.py:train"}
    assert recipe["finetune"] is None  # the parsed file is left alone
    with pytest.raises(InputError, match="version is not a mapping"):
        apply_overrides(recipe, ["version.x=1"])
    with pytest.raises(InputError, match="key.path=value"):
        apply_overrides(recipe, ["finetune"])


def test_apply_overrides_are_validated_like_the_file(cli, tmp_path: Path) -> None:
    recipe = ROOT / "recipes" / "mnist-cnn-int8-ptq.yaml"
    result = cli("apply", str(recipe), "finetune.mode=bogus", "data.calibration_samples=0", "-o", str(tmp_path / "o"))
    assert result.code == 2, result.err
    assert "finetune.mode" in result.err and "data.calibration_samples" in result.err  # every problem at once
    assert not (tmp_path / "o").exists()


@pytest.fixture
def tiny(factory_file) -> tuple[str, str]:
    path = factory_file(FACTORIES, name="tiny_factories.py")
    return f"{path}:model", f"{path}:data"


def test_plan_finetune_writes_a_finetune_section(cli, tiny, tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    result = cli("plan", tiny[0], "--data", tiny[1], "--exact", "--sensitivity", "trace", "--budget", "avg_bits=6",
                 "--finetune", "kd", "-o", str(out))
    assert result.code == 0, result.err
    assert yaml.safe_load(out.read_text())["finetune"]["mode"] == "kd"
    assert cli("validate", str(out), "--no-model").code == 0


def test_sweep_with_a_mistyped_override_names_the_typo(cli, tiny, tmp_path: Path) -> None:
    result = cli("plan", tiny[0], "--data", tiny[1], "--exact", "--sensitivity", "trace",
                 "--sweep", "avg_bits=2:8:3", "--override", "nope=w8", "-o", str(tmp_path / "f.json"))
    assert result.code == 2 and "'nope'" in result.err and "widen" not in result.err, result.err
