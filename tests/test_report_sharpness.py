"""Sharpness made legible: every λ_max in the report says of which loss and parametrisation it is,
and each fine-tuning sharpness stands beside the stability limit its learning rate implies,
checked against fine-tuning's own formula (``compress.finetune.sharpness.stability_limit``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from compress.finetune.sharpness import stability_limit
from compress.finetune.spec import FinetuneResult, SharpnessPoint
from compress.report.build import report_notes
from compress.report.inputs import ReportInputs
from compress.report.render import markdown
from compress.report.tables import report_tables
from tests.helpers.report_files import load, write_stage_files


def finetune_file(path: Path, optimizer: str, momentum: float, lr: float, sharpnesses: list[float]) -> None:
    """A fine-tuning result whose points record η and fine-tuning's stable η, as ``finetune_`` writes them."""
    points = tuple(SharpnessPoint(50 * i, s, lr, stability_limit(s, optimizer, momentum))
                   for i, s in enumerate(sharpnesses))
    result = FinetuneResult(steps=100, epochs_run=1.0, lr=lr, lr_source="given", initial_sharpness=None,
                            sharpness_history=points, losses=(0.3,), resumed_from_step=None, world_size=1,
                            seconds=1.0, sharpness_seconds=0.1)
    path.write_text(json.dumps(result.to_dict()))


def with_finetune_section(plan: Path, section: dict) -> None:
    recipe = yaml.safe_load(plan.read_text())
    plan.write_text(yaml.safe_dump({**recipe, "finetune": section}))


def table(inputs: ReportInputs, title_start: str):
    return next(t for t in report_tables(inputs) if t.title.startswith(title_start))


@pytest.mark.parametrize("optimizer, momentum, limit", [("sgd", 0.9, lambda lr: 2 * 1.9 / lr),
                                                         ("adamw", 0.8, lambda lr: 2 * 1.8 / (0.2 * lr))])
def test_the_limit_is_the_stable_sharpness_at_the_learning_rate(tmp_path, optimizer, momentum, limit):
    paths = write_stage_files(tmp_path)
    finetune_file(paths["finetune"], optimizer, momentum, 0.02, [86.5, 120.0])
    with_finetune_section(paths["plan_yaml"], {"mode": "qat+kd", "optimizer": optimizer, "momentum": momentum})
    inputs = load(paths)
    assert [p.limit for p in inputs.sharpness] == pytest.approx([limit(0.02)] * 2, rel=1e-12)
    rows = table(inputs, "Sharpness during fine-tuning").rows
    assert rows[0][:4] == ("0", "86.5", "0.02", f"{limit(0.02):.4g}")
    assert rows[1][4] == f"{120.0 / limit(0.02):.2f}"


def test_every_lambda_max_names_its_loss_and_parametrisation(tmp_path):
    paths = write_stage_files(tmp_path)  # the plan quantizes, so apply folded BatchNorm before fine-tuning
    finetune_file(paths["finetune"], "sgd", 0.9, 0.01, [30.0])
    with_finetune_section(paths["plan_yaml"], {"mode": "qat+kd"})
    inputs = load(paths)
    curvature = table(inputs, "Top eigenvalues").title
    assert "cross-entropy Hessian" in curvature and "BatchNorm, if any, unfolded" in curvature
    sharpness = table(inputs, "Sharpness during fine-tuning")
    assert "QAT + KD" in sharpness.title and "BatchNorm folded" in sharpness.title
    assert "2(1 + β)/η, β = 0.9" in sharpness.headers[3]  # FinetuneSpec's default optimizer and momentum
    page = markdown(inputs, report_tables(inputs), report_notes(inputs))
    assert ("Two different matrices: the curvature's largest eigenvalue 55 is the λ of the cross-entropy Hessian"
            in page)


def test_unquantized_recipe_keeps_batchnorm_and_adam_is_preconditioned(tmp_path):
    paths = write_stage_files(tmp_path)
    recipe = yaml.safe_load(paths["plan_yaml"].read_text())
    recipe.pop("quantization", None)
    paths["plan_yaml"].write_text(yaml.safe_dump({**recipe, "finetune": {"mode": "kd", "optimizer": "adamw"}}))
    finetune_file(paths["finetune"], "adamw", 0.9, 0.001, [10.0])
    title = table(load(paths), "Sharpness during fine-tuning").title
    assert "BatchNorm unfolded" in title and "λ_max(P⁻¹H)" in title and "distillation loss (KD)" in title


def test_older_results_without_learning_rates_still_load(tmp_path):
    paths = write_stage_files(tmp_path)
    payload = json.loads(paths["finetune"].read_text())
    for point in payload["sharpness_history"]:
        del point["lr"], point["stable_lr"]
    paths["finetune"].write_text(json.dumps(payload))
    inputs = load(paths)
    assert all(p.limit is None for p in inputs.sharpness)
    assert table(inputs, "Sharpness during fine-tuning").rows[0][3:] == ("—", "—")
    assert ReportInputs.from_dict(json.loads(json.dumps(inputs.to_dict()))) == inputs
