"""Checkpoint format 3: ``compressed.json`` leaves the weight grids (scales, zero points) to the
weights file that already holds them; loading restores them from there.

A small model with every kind of weight grid — a per-channel int8 conv with calibrated
activations, a grouped conv at 4 bits with scales held fixed (as GPTQ leaves them), symmetric
blocks of 16, asymmetric blocks with fixed scales and zero points, asymmetric blocks rounded to
nearest — is saved, and checked against references computed here: no grid array in the JSON;
the reloaded state dict equals the saved model's fake-quantized state, its outputs are equal,
its records equal the records in memory, and it exports the same ONNX bytes as the model before
saving. A version-2 directory, as the version-2 writer wrote it (grids in the JSON), still loads;
and the JSON is a few hundred bytes per layer, whatever the layers' widths.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.checkpoint.format import INFO_FILE, WEIGHTS_FILE, CheckpointInfo, load_checkpoint, save_checkpoint
from compress.pack.state import layout_path
from compress.quant.blocks import asymmetric_block_grid
from compress.quant.modules import QuantLayer
from compress.quant.quantize import quantize_model_
from compress.quant.records import QuantRecords, QuantSettings
from compress.quant.weights import per_channel_scales

MODEL_FILE = '''
import torch
from torch import nn


def small(width: int = 32, layers: int = 1) -> nn.Module:
    torch.manual_seed(0)
    head = [nn.Linear(width, width) for _ in range(layers)]
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.ReLU(), nn.Flatten(),
        nn.Linear(512, width), nn.ReLU(), *head, nn.Linear(width, 16), nn.Linear(16, 10))
'''
INT8 = QuantSettings(weight_bits=8, act_bits=8, method="rtn")
GROUPED_FIXED = QuantSettings(weight_bits=4, act_bits=8, method="gptq")
BLOCKS = QuantSettings(weight_bits=4, act_bits=None, weight_block=16, method="rtn")
ASYMMETRIC = QuantSettings(weight_bits=4, act_bits=None, weight_block=16, symmetric=False, method="gptq")
ASYMMETRIC_RTN = QuantSettings(weight_bits=4, act_bits=None, weight_block=16, symmetric=False, method="rtn")


def _spec(tmp_path: Path, width: int = 32, layers: int = 1) -> str:
    path = tmp_path / "small_model.py"
    path.write_text(MODEL_FILE.replace("width: int = 32", f"width: int = {width}")
                    .replace("layers: int = 1", f"layers: int = {layers}"))
    return f"{path}:small"


def _inputs() -> torch.Tensor:
    return torch.linspace(-1, 1, 4 * 2 * 8 * 8).reshape(4, 2, 8, 8).sin()


def _quantized(spec: str, layers: int = 1, last: QuantSettings = BLOCKS) -> tuple[nn.Module, QuantRecords]:
    """Every grid kind (the ``layers`` square Linears in symmetric blocks, the ``last`` layer as
    given); the fixed scales are the derived ones times 0.9 (a clip, as GPTQ's MSE search
    chooses), so they differ from what the weight alone would give."""
    from compress.models.spec import build_model

    model = build_model(spec).eval()
    settings = {"0": INT8, "2": GROUPED_FIXED, "5": BLOCKS, str(len(model) - 2): ASYMMETRIC, str(len(model) - 1): last}
    last = len(model) - 1
    settings.update({str(7 + i): BLOCKS for i in range(layers)})
    grouped, asymmetric = model[2].weight.detach(), model[last - 1].weight.detach()
    scales = {"2": 0.9 * per_channel_scales(grouped, 4).reshape(-1)}
    zeros = {}
    scales[str(last - 1)], zeros[str(last - 1)] = asymmetric_block_grid(asymmetric, 4, 16)
    scales[str(last - 1)] = 0.9 * scales[str(last - 1)]
    records = quantize_model_(model, settings, [_inputs()], scales, zeros)
    return model, records


def _saved(tmp_path: Path, spec: str, last: QuantSettings = BLOCKS) -> tuple[Path, nn.Module, QuantRecords]:
    model, records = _quantized(spec, last=last)
    path = tmp_path / "ckpt"
    save_checkpoint(model, CheckpointInfo(spec, None, {}, records.to_dict()), path)
    return path, model, records


def _fake_quantized_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The reference: the model's state dict with each quantized weight replaced by the value it
    computes with (codes times scales), as the packed file stores it."""
    state = dict(model.state_dict())
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, QuantLayer) and module.settings.weight_bits is not None:
                state[f"{name}.weight"] = module.quantized_weight().detach()
    return state


def test_the_json_holds_no_grid_and_the_reload_is_bit_identical(tmp_path: Path) -> None:
    path, model, records = _saved(tmp_path, _spec(tmp_path))
    stored = json.loads((path / INFO_FILE).read_text())
    assert stored["version"] == 3
    layers = stored["quant"]["layers"]
    assert set(layers) == set(records.layers) and all("weight_scales" not in r and "weight_zero_points" not in r
                                                      for r in layers.values())
    assert {r.fixed_scales for r in records.layers.values()} == {True, False}
    assert sum(r.weight_zero_points is not None for r in records.layers.values()) == 1

    reloaded, info = load_checkpoint(path)
    assert info.quant == records.to_dict()  # the grids as they were in memory, restored from the weights
    assert QuantRecords.from_dict(info.quant) == records
    expected, found = _fake_quantized_state(model), reloaded.state_dict()
    assert list(found) == list(expected)
    for name, tensor in expected.items():
        assert found[name].dtype == tensor.dtype and torch.equal(found[name], tensor), name
    with torch.no_grad():
        assert torch.equal(reloaded(_inputs()), model(_inputs()))


def test_asymmetric_blocks_rounded_to_nearest_reload_bit_identical(tmp_path: Path) -> None:
    path, model, records = _saved(tmp_path, _spec(tmp_path), last=ASYMMETRIC_RTN)
    reloaded, info = load_checkpoint(path)
    assert info.quant == records.to_dict() and records.layers[str(len(model) - 1)].fixed_scales  # held, not re-derived
    with torch.no_grad():
        assert torch.equal(reloaded(_inputs()), model(_inputs()))


def test_the_reloaded_model_exports_the_same_onnx_bytes(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from compress.export.onnx_qdq import export_onnx

    path, model, _ = _saved(tmp_path, _spec(tmp_path))
    reloaded, _ = load_checkpoint(path)
    before = export_onnx(model, (_inputs(),), tmp_path / "before.onnx", "ort").read_bytes()
    after = export_onnx(reloaded, (_inputs(),), tmp_path / "after.onnx", "ort").read_bytes()
    assert after == before


def test_a_version_two_directory_still_loads(tmp_path: Path) -> None:
    """Written as the version-2 ``save_checkpoint`` wrote it: the packed weights, then the info
    with the records as ``to_dict`` gives them (grids included) and the packed sizes."""
    from compress.jsonio import write_json
    from compress.pack.state import write_packed_state

    spec = _spec(tmp_path)
    model, records = _quantized(spec)
    path = tmp_path / "v2"
    path.mkdir()
    sizes = write_packed_state(path / WEIGHTS_FILE, model)
    info = CheckpointInfo(spec, None, {}, records.to_dict(), files=sizes.to_dict(), version=2)
    write_json(path / INFO_FILE, info.to_dict())
    assert "weight_scales" in json.loads((path / INFO_FILE).read_text())["quant"]["layers"]["0"]

    reloaded, loaded = load_checkpoint(path)
    assert loaded.version == 2 and loaded.quant == records.to_dict()
    with torch.no_grad():
        assert torch.equal(reloaded(_inputs()), model(_inputs()))
    _, again = load_checkpoint(_resaved(reloaded, loaded, tmp_path / "v3"))
    assert again.version == 3 and again.quant == loaded.quant


def _resaved(model: nn.Module, info: CheckpointInfo, path: Path) -> Path:
    save_checkpoint(model, info, path)
    return path


def test_a_layer_missing_from_the_weights_file_is_one_line(tmp_path: Path) -> None:
    from compress.errors import InputError

    path, _, _ = _saved(tmp_path, _spec(tmp_path))
    stored = json.loads((path / INFO_FILE).read_text())
    layers = stored["quant"]["layers"]
    layers["renamed"] = layers.pop("5")
    (path / INFO_FILE).write_text(json.dumps(stored))
    with pytest.raises(InputError, match="renamed has no packed weight") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)


def test_files_count_every_byte_of_the_directory(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path, _spec(tmp_path))
    files = json.loads((path / INFO_FILE).read_text())["files"]
    on_disk = {p.name: p.stat().st_size for p in path.iterdir()}
    assert on_disk == {WEIGHTS_FILE: files["tensor_bytes"], layout_path(path / WEIGHTS_FILE).name: files["layout_bytes"],
                       INFO_FILE: files["info_bytes"]}
    assert files["total_bytes"] == sum(on_disk.values())


def test_the_json_is_a_few_hundred_bytes_per_layer_whatever_the_width(tmp_path: Path) -> None:
    """MiniLM has 36 quantized Linears; a model with as many, at two widths: the JSON does not
    grow with the width (it did by 16 numbers per row of each blocked layer), and stays under
    1.5 kB a layer."""
    sizes = {}
    for width in (32, 256):
        spec = _spec(tmp_path, width, layers=31)
        model, records = _quantized(spec, layers=31)
        assert len(records.layers) == 36
        written = save_checkpoint(model, CheckpointInfo(spec, None, {}, records.to_dict()), tmp_path / f"c{width}")
        sizes[width] = written.files["info_bytes"]
    assert abs(sizes[256] - sizes[32]) < 16, sizes
    assert sizes[256] / 36 < 1500, sizes


def test_eval_and_the_report_show_the_checkpoint_directory_on_disk(tmp_path: Path) -> None:
    from compress.pipeline.evaluate import evaluate_model
    from compress.report.inputs import ReportInputs, Variant
    from compress.report.tables import variants_table

    path, model, _ = _saved(tmp_path, _spec(tmp_path))
    labels = torch.arange(4) % 10
    result = evaluate_model(str(path), (_inputs(), labels))
    assert result.checkpoint_bytes == sum(p.stat().st_size for p in path.iterdir())
    assert evaluate_model(model, (_inputs(), labels)).checkpoint_bytes is None
    inputs = ReportInputs("m", (Variant("fp32", "accuracy", 0.9, 0.08),
                                Variant("ckpt", "accuracy", 0.9, 0.02, checkpoint_bytes=result.checkpoint_bytes)))
    table = variants_table(inputs)
    assert "checkpoint on disk (MB)" in table.headers
    assert table.rows[1][table.headers.index("checkpoint on disk (MB)")] == f"{result.checkpoint_bytes / 1e6:.4g}"
