"""A wheel built from the tree installs into a fresh venv and its CLI runs from there: the derived
package list cannot drop a subpackage (a hand-kept list once dropped compress.apply and
compress.recipe). The venv borrows the test environment's third-party packages through a .pth
line (which, unlike a site directory, does not run that environment's editable-install finder),
so only the wheel provides ``compress``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREE = ("pyproject.toml", "setup.py", "README.md", "compress", "export", "kernels")


def _copy_tree(dest: Path) -> None:
    """The checkout as a clean clone has it (no symlinks, caches or build outputs)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in TREE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(source, dest / name)
    for link in (dest / "compress" / "export", dest / "compress" / "kernels"):
        if link.is_symlink():
            link.unlink()


def _run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the checkout must not shadow the wheel
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, timeout=600, env=env)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_wheel_installs_and_runs_eval_and_plan(tmp_path: Path) -> None:
    source, wheels, venv = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv"
    source.mkdir()
    _copy_tree(source)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, source)
    wheel = next(wheels.glob("compress-*.whl"))
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel)
    where = _run(python, "-c", "import compress.apply, compress.recipe, compress.export, compress.pipeline; "
                 "print(compress.__file__)", cwd=tmp_path).stdout.strip()
    assert where.startswith(str(venv)), f"compress imported from {where}, not from the wheel"
    cli = venv / "bin" / "compress"
    evaluated = _run(cli, "eval", "builtin:mnist-cnn", "--data", "builtin:mnist5k",
                     cwd=tmp_path)
    assert "accuracy" in evaluated.stdout
    _run(cli, "plan", "builtin:mnist-cnn", "--data", "builtin:mnist5k", "--max-samples", "64", "--max-seconds", "20",
         "--sensitivity", "trace", "--budget", "avg_bits=6", "-o", tmp_path / "plan.yaml", cwd=tmp_path)
    assert "quantization:" in (tmp_path / "plan.yaml").read_text()
