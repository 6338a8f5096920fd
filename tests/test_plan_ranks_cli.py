"""``compress plan --ranks``: rank options reach the CLI, an override can force one, and the plan
recipe carries the factorisation in its ``lowrank`` section, which ``compress validate`` accepts."""

from pathlib import Path

import yaml

from tests.helpers.factories import FACTORIES


def test_plan_with_ranks_writes_a_lowrank_section(cli, factory_file, tmp_path: Path) -> None:
    path = factory_file(FACTORIES, name="tiny_factories.py")
    output = tmp_path / "plan.yaml"
    result = cli("plan", f"{path}:model", "--data", f"{path}:data", "--exact", "--budget", "size_mb=1",
                 "--bits", "8,fp32", "--ranks", "0.5", "--override", "head=w8+r1", "-o", str(output))
    assert result.code == 0, result.err
    recipe = yaml.safe_load(output.read_text())
    assert recipe["lowrank"]["layers"] == {"head": {"rank": 1, "method": "fisher_whitened"}}
    assert recipe["quantization"]["layers"]["head"] == {"weight_bits": 8, "act_bits": None, "method": "rtn"}
    assert recipe["plan"]["layers"]["head"]["rank"] == 1
    assert cli("validate", str(output)).code == 0
    bad = cli("plan", f"{path}:model", "--data", f"{path}:data", "--exact", "--budget", "size_mb=1",
              "--ranks", "1.5", "-o", str(tmp_path / "bad.yaml"))
    assert bad.code == 2 and "ranks" in bad.err
