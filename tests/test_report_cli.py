"""``compress report`` end to end through its subcommand module (the stage files come from the
stages' own result types, see tests/test_report.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from compress.cli import main as cli_main
from compress.cli import report as report_cmd
from compress.errors import InputError
from tests.helpers.report_files import write_stage_files


def run_report(*argv: str) -> int:
    """Parse ``compress report ARGV`` with the shared options and run it."""
    parser = argparse.ArgumentParser(prog="compress")
    report_cmd.add_parser(parser.add_subparsers(dest="command"), cli_main.common_options())
    args = parser.parse_args(["report", *argv])
    return args.run(args)


def stage_args(paths: dict[str, Path]) -> list[str]:
    return ["--curvature", str(paths["curvature"]), "--plan", str(paths["plan_yaml"]),
            "--eval", f"fp32={paths['fp32']}", "--eval", f"plan={paths['plan_eval']}",
            "--latency", str(paths["latency"]), "--finetune", str(paths["finetune"]),
            "--parity", f"ort={paths['parity']}", "--measured", str(paths["measured"])]


def test_writes_the_report_and_prints_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    code = run_report(*stage_args(write_stage_files(tmp_path)), "-o", str(out), "--json", str(tmp_path / "r.json"))
    printed = capsys.readouterr().out
    assert code == 0 and (out / "report.html").exists() and (out / "report.md").exists()
    assert str(out / "report.html") in printed.replace("\n", "") and "97.50%" in printed
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["size_reduction"]["plan"] == pytest.approx(4.0)


def test_refuses_to_overwrite_without_force(tmp_path: Path, cli) -> None:
    paths = write_stage_files(tmp_path)
    argv = ["--eval", f"fp32={paths['fp32']}", "-o", str(tmp_path / "r")]
    assert run_report(*argv) == 0
    with pytest.raises(InputError, match=r"set force=True"):  # the library names its parameter
        run_report(*argv)
    refused = cli("report", *argv)  # the CLI shows the flag
    assert refused.code == 2 and "--force" in refused.err and "force=True" not in refused.err
    assert run_report(*argv, "--force") == 0


@pytest.mark.parametrize("argv, message", [
    ([], "nothing to report"),
    (["--eval", "fp32.json"], "expected NAME=PATH"),
    (["--eval", "a=x.json", "--eval", "a=y.json"], "given twice"),
])
def test_bad_arguments_are_user_errors(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        run_report(*argv, "-o", str(tmp_path))


def test_registered_in_the_cli(cli, tmp_path: Path) -> None:
    if report_cmd not in cli_main.SUBCOMMANDS:
        pytest.skip("compress report is not registered in compress/cli/main.py yet")
    result = cli("report", "-o", str(tmp_path))
    assert result.code == 2 and "nothing to report" in result.err
