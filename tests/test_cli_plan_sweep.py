"""``compress plan --sweep`` and the constraint options on the command line."""

import json
from pathlib import Path

from tests.helpers.factories import FACTORIES


def common(path: Path, output: Path) -> tuple[str, ...]:
    return ("plan", f"{path}:model", "--data", f"{path}:data", "--exact", "-o", str(output))


def test_sweep_writes_a_frontier_and_its_plot(cli, factory_file, tmp_path: Path) -> None:
    path = factory_file(FACTORIES, name="tiny_factories.py")
    output = tmp_path / "frontier.json"
    result = cli(*common(path, output), "--sweep", "avg_bits=1:8:8", "--bits", "2,4,8")
    assert result.code == 0, result.err
    frontier = json.loads(output.read_text())
    assert frontier["budget_name"] == "avg_bits" and frontier["infeasible"] == [1.0]
    assert len(frontier["points"]) == 7
    assert (tmp_path / "frontier.png").stat().st_size > 10_000


def test_overrides_act_bits_and_their_errors(cli, factory_file, tmp_path: Path) -> None:
    path = factory_file(FACTORIES, name="tiny_factories.py")
    output, report = tmp_path / "plan.yaml", tmp_path / "plan.json"
    result = cli(*common(path, output), "--budget", "avg_bits=8", "--act-bits", "8,fp32",
                 "--override", "head=w8a8", "--override", "re:m.*=fp32|w2", "--json", str(report))
    assert result.code == 0, result.err
    layers = json.loads(report.read_text())["layers"]
    assert (layers["head"]["weight_bits"], layers["head"]["act_bits"]) == (8, 8)
    assert layers["mix"]["weight_bits"] in (None, 2) and layers["mix"]["act_bits"] is None
    bad = cli(*common(path, tmp_path / "b.yaml"), "--budget", "avg_bits=6", "--override", "head=w9")
    assert bad.code == 2 and "not a candidate" in bad.err
    bad = cli(*common(path, tmp_path / "b.yaml"), "--budget", "avg_bits=6", "--act-bits", "4")
    assert bad.code == 2 and "--act-bits" in bad.err
    missing = cli(*common(path, tmp_path / "b.yaml"))
    assert missing.code == 2 and "give a budget" in missing.err
