"""``compress eval``: accuracy and embedding fidelity against values computed by hand."""

import json
from pathlib import Path

import torch

from compress.data.spec import load_data
from compress.models.spec import build_model
from tests.helpers.sources import TINY_MODEL_SOURCE


def test_eval_accuracy_matches_a_direct_computation(cli, factory_file, tmp_path: Path) -> None:
    path = factory_file(TINY_MODEL_SOURCE)
    out = tmp_path / "r.json"
    result = cli("eval", f"{path}:tiny", "--data", "builtin:digits", "--json", str(out), "--batch-size", "50")
    assert result.code == 0, result.err
    report = json.loads(out.read_text())
    data = load_data("builtin:digits", None, "heldout")
    with torch.no_grad():
        correct = int((build_model(f"{path}:tiny")(data.inputs[0]).argmax(1) == data.targets).sum())
    assert report["metric"] == "accuracy" and report["num_samples"] == len(data) == 359
    assert report["accuracy"] == correct / len(data)
    assert report["num_params"] == 650 and abs(report["size_mb"] - 650 * 4 / 1e6) < 1e-12


def test_eval_without_targets_measures_cosine_to_the_reference(cli, factory_file, tmp_path: Path) -> None:
    path = factory_file(TINY_MODEL_SOURCE)
    reference = build_model(f"{path}:tiny")
    perturbed = build_model(f"{path}:tiny")
    with torch.no_grad():
        perturbed[1].weight.add_(0.3 * torch.randn_like(perturbed[1].weight))
    weights = tmp_path / "perturbed.pt"
    torch.save(perturbed.state_dict(), weights)
    out = tmp_path / "r.json"
    args = ("eval", f"{path}:tiny", "--data", f"{path}:unlabeled_data", "--json", str(out))
    refused = cli(*args)  # no labels and no reference: a model compared with itself would score 1
    assert refused.code == 2 and "--reference MODEL" in refused.err and not out.exists()
    assert cli(*args, "--weights", str(weights), "--reference", f"{path}:tiny").code == 0
    inputs = load_data(f"{path}:unlabeled_data", None, "heldout").inputs[0]
    with torch.no_grad():
        expected = torch.nn.functional.cosine_similarity(perturbed(inputs), reference(inputs)).mean().item()
    measured = json.loads(out.read_text())["mean_cosine"]
    assert abs(measured - expected) < 1e-6 and measured < 0.999


def test_eval_minilm_on_sentences(cli, tmp_path: Path) -> None:
    out = tmp_path / "minilm.json"
    # two independent loads of the packaged weights must agree (a cosine of 1 up to rounding)
    result = cli("eval", "builtin:minilm", "--data", "builtin:sentences", "--reference", "builtin:minilm",
                 "--json", str(out))
    assert result.code == 0, result.err
    report = json.loads(out.read_text())
    assert report["metric"] == "mean_cosine" and report["num_samples"] == 64
    assert abs(report["mean_cosine"] - 1.0) < 1e-5 and report["num_params"] == 22_713_216


def test_env_reports_backends(cli, tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    assert cli("env", "--json", str(out)).code == 0
    report = json.loads(out.read_text())
    assert report["torch"]["usable"] and report["torch"]["version"] == torch.__version__
    for name in ("torchvision", "transformers", "onnxruntime", "tensorrt", "gpu"):
        assert isinstance(report[name]["usable"], bool)
    assert report["gpu"]["usable"] == torch.cuda.is_available()
