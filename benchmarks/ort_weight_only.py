"""Weight-only layers on ONNX Runtime: the ``fold`` form against the DequantizeLinear form, FP32
and ORT's own ``quantize_static`` on builtin:mnist-cnn (BatchNorm, depthwise conv, residual add).

Run (about 2 minutes on 2 cores)::

    python benchmarks/ort_weight_only.py --json benchmarks/results/ort_weight_only.json

Models, all from the same trained network, BatchNorms folded:
- ``fp32``: the float model;
- ``w8-dequantize``: every layer weight-only int8 (per channel), exported with the weight's
  DequantizeLinear kept (``weight_only="dequantize"``, the form before issue 12);
- ``w8-fold`` / ``w4-fold``: the same layers at 8 / 4 bits in the ``fold`` form (codes → Cast →
  Mul, constant-folded by ORT at session start; the ``ort`` default);
- ``w8a8-ours``: every layer int8 weights and uint8 activations (our static Q/DQ export);
- ``ort-quantize_static``: ORT's QDQ quantizer (per channel, uint8 activations, min-max).
Calibration: the same 1,000 training digits; accuracy: the 1,000 held-out digits run by ORT.
Latency: ``measure_latency`` (warm-up, then all models round-robin, medians), 1 intra-op thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ort_speed import accuracy, latency_table, ort_static, save_float  # noqa: E402

from compress.data.spec import load_data  # noqa: E402
from compress.export.onnx_qdq import export_onnx, float_at_runtime  # noqa: E402
from compress.jsonio import write_json  # noqa: E402
from compress.models.spec import build_model  # noqa: E402
from compress.quant.quantize import quantize_model_  # noqa: E402
from compress.quant.records import QuantSettings  # noqa: E402

LAYERS = ("stem.0", "conv.0", "block.dw.0", "block.pw.0", "head")
VARIANTS = {  # name: (settings, weight_only form)
    "w8-dequantize": (QuantSettings(weight_bits=8, act_bits=None), "dequantize"),
    "w8-fold": (QuantSettings(weight_bits=8, act_bits=None), "fold"),
    "w4-fold": (QuantSettings(weight_bits=4, act_bits=None), "fold"),
    "w8a8-ours": (QuantSettings(act_signed=False), None),
}


def exports(folder: Path) -> dict[str, Path]:
    train = load_data("builtin:mnist5k", "train", "train")
    calibration = [batch.inputs for batch in train.batches(500)][:2]
    example = (calibration[0][0][:1],)
    paths = {"fp32": save_float(build_model("builtin:mnist-cnn"), example, folder / "fp32.onnx")}
    for name, (settings, form) in VARIANTS.items():
        model = build_model("builtin:mnist-cnn")
        quantize_model_(model, dict.fromkeys(LAYERS, settings), calibration)
        paths[name] = export_onnx(model, example, folder / f"{name}.onnx", "ort", form)
    paths["ort-quantize_static"] = ort_static(paths["fp32"], [x[0].numpy() for x in calibration], folder / "ort_static.onnx")
    return paths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model and batch size (>= 30)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = exports(Path(tmp))
        latency = latency_table(paths, (1, 32), args.runs, 1)
        results = {
            "latency_ms": latency,
            "speedup_vs_fp32": {name: {b: latency["fp32"][b] / ms for b, ms in row.items()} for name, row in latency.items()},
            "accuracy": {name: accuracy(path) for name, path in paths.items()},
            "file_bytes": {name: path.stat().st_size for name, path in paths.items()},
            "float_at_runtime": {name: list(float_at_runtime(path)) for name, path in paths.items()},
        }
    print(json.dumps(results, indent=1, default=str))
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
