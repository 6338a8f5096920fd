"""The report: inputs assembled from the files the other stages write (their own dataclasses'
to_dict), round trips, derived figures against hand-computed values, and the three files."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from compress.errors import InputError
from compress.report.build import build_report
from compress.report.inputs import LayerRow, ReportInputs, Variant
from compress.report.load import load_report_inputs
from compress.report.summary import spearman, summary
from tests.helpers.report_files import load, write_stage_files

@pytest.fixture
def inputs(tmp_path: Path) -> ReportInputs:
    return load(write_stage_files(tmp_path))


def test_loads_every_stage_file(inputs: ReportInputs) -> None:
    assert inputs.model == "builtin:mnist-cnn"
    assert [v.name for v in inputs.variants] == ["fp32", "plan", "uniform int8"]
    fp32, plan, uniform = inputs.variants
    assert (fp32.metric, fp32.value, fp32.size_mb) == ("accuracy", 0.982, 0.1)
    assert [(t.batch_size, t.median_ms, t.p90_ms) for t in plan.latency] == [(1, 0.4, 0.48), (8, 1.0, 1.2)]
    assert uniform.value is None and len(uniform.latency) == 1  # timed only
    stem, conv, dw, head = inputs.layers
    assert (stem.name, stem.trace, stem.trace_stderr, stem.weight_bits, stem.sparsity) == ("stem", 40.0, 2.0, 8, 0.0)
    assert (conv.weight_bits, conv.sparsity, conv.predicted_delta_loss, conv.measured_delta_loss) == (4, 0.5, 0.012,
                                                                                                      0.008)
    assert dw.weight_bits is None and head.weight_bits == 2
    assert (head.rounded_delta_loss, head.reconstructed_delta_loss) == (0.5, 0.02)
    assert (dw.rounded_delta_loss, dw.reconstructed_delta_loss) == (None, None)
    assert [(p.step, p.lambda_max) for p in inputs.sharpness] == [(0, 30.0), (50, 25.0)]
    assert inputs.parity[0].target == "ort" and inputs.parity[0].max_error_steps == 1.0
    assert inputs.spectrum.top_eigenvalues == (55.0, 21.0)


def test_spectrum_is_a_density_with_the_slq_mass(inputs: ReportInputs) -> None:
    """The quadrature weights sum to 1, so the smoothed density integrates to 1 (up to the tails
    cut at 5% beyond the extreme nodes: σ = 1% of the span leaves < 1e-6 outside)."""
    grid, density = np.array(inputs.spectrum.grid), np.array(inputs.spectrum.density)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=2e-3)
    assert grid[np.argmax(density)] == pytest.approx(0.0, abs=0.2)  # the 70% mass at zero


def test_spearman_matches_hand_computed_ranks(inputs: ReportInputs) -> None:
    # predicted ranks (stem, conv, dw, head) = 2,3,1,4; measured ranks = 2,3,1,4 -> ρ = 1
    assert spearman(inputs) == pytest.approx(1.0)
    swapped = [LayerRow(n, 1.0, 0.1, 8, None, 0.0, p, m) for n, p, m in
               zip("abcd", (1, 2, 3, 4), (10, 30, 20, 40))]  # d² = 0,1,1,0: ρ = 1 − 6·2/(4·15) = 0.8
    assert spearman(ReportInputs("m", (), tuple(swapped))) == pytest.approx(0.8)
    assert spearman(ReportInputs("m", (), tuple(swapped[:2]))) is None


def test_summary_ratios(inputs: ReportInputs) -> None:
    figures = summary(inputs)
    assert figures["baseline"] == "fp32"
    assert figures["size_reduction"]["plan"] == pytest.approx(4.0)
    assert figures["speedup"]["plan"] == {"ort-cpu@1": pytest.approx(1.25), "ort-cpu@8": pytest.approx(2.0)}
    assert figures["speedup"]["uniform int8"]["ort-cpu@8"] is None


def test_inputs_round_trip(inputs: ReportInputs) -> None:
    assert ReportInputs.from_dict(json.loads(json.dumps(inputs.to_dict()))) == inputs


def test_builds_three_self_contained_files(inputs: ReportInputs, tmp_path: Path) -> None:
    paths = build_report(inputs, tmp_path / "report")
    page = paths.html.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 7  # size, latency, layers, reconstruction, spectrum, predicted vs measured, sharpness
    assert all(base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n" for image in images)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page) and "http" not in page
    text = paths.markdown.read_text()
    assert "| ort | 1 | 0.1 | 99.90% | 19,000 (12,000 + 7,000) |" in text  # the export's measured bytes
    assert "| head | 1.5 ± 0.075 | 2 | float | 0.00% | 0.02 | 0.03 | 0.5 | 0.02 |" in text  # rounded vs reconstructed
    assert "| plan | accuracy 97.50% | 0.025 (4.00× smaller) | 0.4 / 0.48 (1.25×) | 1 / 1.2 (2.00×) |" in text
    assert "| conv | 12 ± 0.6 | 4 | float | 50.00% | 0.012 | 0.008 |" in text
    report = json.loads(paths.json.read_text())
    assert ReportInputs.from_dict(report["inputs"]) == inputs
    assert report["summary"]["spearman_predicted_vs_measured"] == pytest.approx(1.0)


def test_figures_without_data_are_left_out(tmp_path: Path) -> None:
    inputs = ReportInputs("m", (Variant("fp32", "accuracy", 0.9, 1.0), Variant("int8", "accuracy", 0.89, 0.25)))
    page = build_report(inputs, tmp_path).html.read_text()
    assert page.count("data:image/png;base64,") == 1  # quality vs size only


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    inputs = ReportInputs("m", (Variant("fp32", "mean_cosine", 1.0, None),))
    build_report(inputs, tmp_path)
    with pytest.raises(InputError, match="force=True"):
        build_report(inputs, tmp_path)
    assert build_report(inputs, tmp_path, force=True).html.exists()


@pytest.mark.parametrize("payload, message", [
    ({"model": "m", "variants": [{"name": "a", "metric": "accuracy", "value": 1, "size_mb": 1, "colour": 1}]},
     "unknown key"),
    ({"model": "m"}, "missing key 'variants'"),
    ({"model": "m", "variants": [{"name": "a", "metric": "accuracy", "value": 1, "size_mb": 1}] * 2}, "unique"),
])
def test_bad_inputs_are_user_errors(payload: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ReportInputs.from_dict(payload)


def test_bad_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_report_inputs(evals={"fp32": tmp_path / "missing.json"})
    (tmp_path / "recipe.yaml").write_text("version: 1\nmodel: {spec: x}\n")
    with pytest.raises(InputError, match="no plan: section"):
        load_report_inputs(plan=tmp_path / "recipe.yaml")
    (tmp_path / "curv.json").write_text("{\"trace\": 1}")
    with pytest.raises(InputError, match="no 'layers'"):
        load_report_inputs(curvature=tmp_path / "curv.json")
