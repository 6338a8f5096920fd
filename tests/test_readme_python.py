"""The README's Python section runs as written: one import, one call per stage, on
builtin:mnist-cnn and on a user ``nn.Module`` with a ``DataLoader``; the results it prints are
checked here against what the files on disk and a fresh evaluation say."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    section = README.read_text(encoding="utf-8").split("## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def run_block(code: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(folder)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 (the README's own code)
    return namespace


def test_the_section_has_the_two_examples() -> None:
    blocks = python_blocks()
    assert len(blocks) == 2 and all(block.count("import compress as cx") == 1 for block in blocks)
    assert '"builtin:mnist-cnn"' in blocks[0] and "DataLoader(" in blocks[1]


@pytest.mark.slow  # 1 to 6 minutes on 2 busy cores: curvature, a verified plan, apply, ORT export
def test_mnist_cnn_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, single_thread) -> None:
    ns = run_block(python_blocks()[0], tmp_path, monkeypatch)
    import compress as cx

    assert 0.95 < ns["applied"].before.value and ns["result"].value > ns["applied"].before.value - 0.02, (
        f"accuracy {ns['applied'].before.value:.4f} -> {ns['result'].value:.4f}")
    assert ns["result"].size_mb < 0.9 * ns["applied"].before.size_mb
    reloaded = cx.evaluate("mnist-out/checkpoint", "builtin:mnist5k")  # the checkpoint reloads without the plan
    assert reloaded.value == ns["result"].value and reloaded.size_mb == ns["result"].size_mb
    assert ns["artifact"].onnx.is_file() and ns["artifact"].parity["top1_agreement"] > 0.98
    report = json.loads(Path(ns["report"].paths.json).read_text())
    assert {v["name"] for v in report["inputs"]["variants"]} == {"before", "plan"}


def test_user_module_with_a_dataloader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, single_thread) -> None:
    ns = run_block(python_blocks()[1], tmp_path, monkeypatch)
    import torch

    applied, net = ns["applied"], ns["net"]
    with torch.no_grad():
        accuracy = float((net(ns["inputs"]).argmax(1) == ns["labels"]).float().mean())
    assert accuracy == pytest.approx(applied.after.value), "the model apply_plan_ left is the one it evaluated"
    assert applied.before.value > 0.9 and applied.after.value > applied.before.value - 0.05
    assert applied.outcome.quant is not None and set(applied.outcome.quant.to_dict()) and ns["artifact"].onnx.is_file()
