"""``compress plan``: a recipe YAML whose choices meet the budget; no overwrite; bad budgets."""

import json
from pathlib import Path

import yaml

from tests.helpers.factories import FACTORIES


def test_plan_writes_a_recipe_within_budget(cli, factory_file, tmp_path: Path) -> None:
    path = factory_file(FACTORIES, name="tiny_factories.py")
    output, report = tmp_path / "plan.yaml", tmp_path / "plan.json"
    args = ("plan", f"{path}:model", "--data", f"{path}:data", "--exact", "--budget", "avg_bits=3",
            "--bits", "2,4,8", "-o", str(output), "--json", str(report))
    result = cli(*args)
    assert result.code == 0, result.err
    recipe = yaml.safe_load(output.read_text())
    assert output.read_text().startswith("# compress plan:")
    chosen = recipe["quantization"]["layers"]
    assert set(chosen) == {"conv", "mix", "head"}  # Linear/Conv layers; BN stays float
    weights = {name: layer["num_weights"] for name, layer in recipe["plan"]["layers"].items()}
    average = sum(chosen[n]["weight_bits"] * weights[n] for n in chosen) / sum(weights.values())
    assert average <= 3 + 1e-9 and abs(recipe["plan"]["totals"]["avg_bits"] - average) < 1e-12
    assert json.loads(report.read_text())["predicted_delta_loss"] == recipe["plan"]["predicted_delta_loss"]
    again = cli(*args)  # existing output is never overwritten without --force
    assert again.code == 2 and "--force" in again.err
    assert cli(*args, "--force").code == 0


def test_plan_bad_budget_and_infeasible_budget(cli, factory_file, tmp_path: Path) -> None:
    path = factory_file(FACTORIES, name="tiny_factories.py")
    common = ("plan", f"{path}:model", "--data", f"{path}:data", "--exact", "-o", str(tmp_path / "p.yaml"))
    bad = cli(*common, "--budget", "bits=3")
    assert bad.code == 2 and "bad budget" in bad.err
    infeasible = cli(*common, "--budget", "avg_bits=1", "--bits", "2,4")
    assert infeasible.code == 2 and "avg_bits=1 cannot be met" in infeasible.err and "2" in infeasible.err
    assert not (tmp_path / "p.yaml").exists()
