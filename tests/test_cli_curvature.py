"""``compress curvature``: the --json contract, the table, the plot, bad input, and torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.factories import FACTORIES

@pytest.fixture
def specs(factory_file) -> tuple[str, str]:
    path = factory_file(FACTORIES, name="tiny_factories.py")
    return f"{path}:model", f"{path}:data"


def test_json_contract_and_exact_agreement(cli, specs, tmp_path: Path) -> None:
    model, data = specs
    estimate, exact = tmp_path / "estimate.json", tmp_path / "exact.json"
    result = cli("curvature", model, "--data", data, "--json", str(estimate), "--plot", str(tmp_path / "c.png"))
    assert result.code == 0, result.err
    assert "head" in result.out and "top eigenvalues" in result.out
    assert cli("curvature", model, "--data", data, "--exact", "--json", str(exact)).code == 0
    ours, reference = json.loads(estimate.read_text()), json.loads(exact.read_text())
    assert set(ours["layers"]) == {"conv", "bn", "mix", "head"}
    for name, layer in ours["layers"].items():
        assert set(layer) >= {"trace", "trace_stderr", "num_params", "num_probes"}
        assert isinstance(layer["num_params"], int) and layer["num_probes"] > 0
        error = abs(layer["trace"] - reference["layers"][name]["trace"])
        assert error <= 0.05 * max(abs(reference["layers"][name]["trace"]), 0.01 * abs(reference["trace"]))
    for key in ("trace", "top_eigenvalues", "num_hvps", "seconds"):
        assert key in ours
    assert (tmp_path / "c.png").stat().st_size > 10_000


@pytest.mark.parametrize("option, value, message", [
    ("--max-samples", "0", "--max-samples"),
    ("--rel-error", "2", "--rel-error"),
    ("--loss", "ce", "--loss distill"),
])
def test_bad_options(cli, specs, option: str, value: str, message: str, factory_file) -> None:
    model, data = specs
    if option == "--loss":  # ce on data without targets
        path = factory_file("import torch\ndef unlabeled():\n    return torch.randn(8, 1, 5, 5), None\n", "u.py")
        data = f"{path}:unlabeled"
    result = cli("curvature", model, "--data", data, option, value)
    assert result.code == 2 and message in result.err and len(result.err.strip().splitlines()) == 1


def test_two_gloo_processes_match_one(specs, tmp_path: Path) -> None:
    model, data = specs
    common = ["curvature", model, "--data", data, "--batch-size", "16", "--max-seconds", "1000"]
    single, double = tmp_path / "one.json", tmp_path / "two.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "compress.cli.main", *common, "--json", str(single)],
                   check=True, capture_output=True, env=env)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
              "-m", "compress.cli.main", *common, "--json", str(double)]
    run = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert one["num_hvps"] == two["num_hvps"]
    for name, layer in one["layers"].items():
        assert abs(two["layers"][name]["trace"] - layer["trace"]) <= 1e-5 * abs(layer["trace"]), name
    for a, b in zip(one["top_eigenvalues"], two["top_eigenvalues"]):
        assert abs(a - b) <= 1e-5 * abs(a)
