"""`compress demo`: the whole pipeline ends with a report (slow: about 2–3 minutes on 2 cores)."""

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_the_report(cli, tmp_path: Path) -> None:
    work = tmp_path / "demo"
    result = cli("demo", "-o", str(work))
    assert result.code == 0, result.err
    assert (work / "report" / "report.html").stat().st_size > 50_000 and "report:" in result.out
    plan, fp32 = (json.loads((work / f"{n}.eval.json").read_text()) for n in ("plan", "fp32"))
    assert plan["accuracy"] >= fp32["accuracy"] - 0.01 and plan["size_mb"] < fp32["size_mb"] / 4
    again = cli("demo", "-o", str(work))
    assert again.code == 2 and "--force" in again.err


def test_demo_refuses_to_replace_a_directory_that_is_not_a_demo(cli, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    result = cli("demo", "-o", str(tmp_path), "--force")
    assert result.code == 2 and "does not look like a demo directory" in result.err
    assert (tmp_path / "mine.txt").read_text() == "keep"
