"""ONNX Runtime CPU speed of our exports against FP32 and ORT's own quantizers (issue 6 targets).

Run (about 3 minutes on 2 cores)::

    python benchmarks/ort_speed.py --json benchmarks/results/ort_speed.json

builtin:mnist-cnn — FP32; ours with the 1-input-channel stem kept float and every other layer
uint8/int8 static Q/DQ ("ours"); ours with every layer int8 ("ours-all-int8"); ORT quantize_static
(QDQ, per-channel, uint8 activations), all calibrated on the same 1,000 training digits; accuracy
on the 1,000 held-out digits run by ORT; per-node times from ORT's profiler at batch 32.
builtin:minilm at batch 8 × 128 tokens — FP32; ours int8 (dynamic per-tensor uint8 activations,
per-channel int8 weights); ours int4 (block-32 weights, MatMulNBits); ORT quantize_dynamic; mean
cosine to the FP32 embeddings on the 64 held-out sentences of builtin:sentences, and max |Δ| /
mean cosine between ORT and our PyTorch fake-quant model.

Latency: ``compress.backends.ort.latency.measure_latency`` — all models of one case alternated round
robin, warm-up then ``--runs`` timed runs each, median reported, per intra-op thread count.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.data.spec import load_data  # noqa: E402
from compress.backends.ort.latency import LatencySpec, measure_latency  # noqa: E402
from compress.export.onnx_qdq import export_onnx, float_onnx  # noqa: E402
from compress.backends.ort.session import ort_session  # noqa: E402
from compress.jsonio import write_json  # noqa: E402
from compress.models.spec import build_model  # noqa: E402
from compress.quant.quantize import quantize_model_  # noqa: E402
from compress.quant.records import QuantSettings  # noqa: E402

MNIST_LAYERS = ("stem.0", "conv.0", "block.dw.0", "block.pw.0", "head")
MINILM_TOKENS = 128


def save_float(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> Path:
    import onnx

    onnx.save(float_onnx(model, inputs), path)
    return path


def ort_static(fp32: Path, calibration: list[np.ndarray], path: Path) -> Path:
    """ORT's quantize_static: QDQ, per-channel int8 weights, uint8 activations, min-max."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter({"input": batch} for batch in calibration)

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    folded = path.with_suffix(".pre.onnx")  # ORT's recommended pre-processing (folds the BatchNorms)
    quant_pre_process(str(fp32), str(folded))
    quantize_static(str(folded), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    return path


def ort_dynamic(fp32: Path, path: Path) -> Path:
    """ORT's quantize_dynamic: per-channel int8 weights, dynamic uint8 activations."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folded = path.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(folded), skip_symbolic_shape=True)
    quantize_dynamic(str(folded), str(path), per_channel=True, weight_type=QuantType.QInt8)
    return path


def mnist_exports(folder: Path) -> dict[str, Path]:
    train = load_data("builtin:mnist5k", "train", "train")
    calibration = [batch.inputs for batch in train.batches(500)][:2]
    example = (calibration[0][0][:1],)
    paths = {"fp32": save_float(build_model("builtin:mnist-cnn"), example, folder / "mnist_fp32.onnx")}
    for name, layers in (("ours", MNIST_LAYERS[1:]), ("ours-all-int8", MNIST_LAYERS)):
        model = build_model("builtin:mnist-cnn")
        quantize_model_(model, {layer: QuantSettings(act_signed=False) for layer in layers}, calibration)
        paths[name] = export_onnx(model, example, folder / f"mnist_{name}.onnx", "ort")
    arrays = [inputs[0].numpy() for inputs in calibration]
    paths["ort-quantize_static"] = ort_static(paths["fp32"], arrays, folder / "mnist_ort_static.onnx")
    return paths


def accuracy(path: Path) -> float:
    heldout = load_data("builtin:mnist5k", "heldout", "heldout")
    session = ort_session(path)
    correct = 0
    for batch in heldout.batches(250):
        logits = session.run(None, {"input": batch.inputs[0].numpy()})[0]
        correct += int((logits.argmax(1) == batch.targets.numpy()).sum())
    return correct / len(heldout)


def node_times(path: Path, feed: dict[str, np.ndarray], runs: int) -> dict[str, float]:
    """Median µs per node of the optimised graph (ORT's profiler), keyed '<op> <node name>'."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, feed)
    times = collections.defaultdict(list)
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[f"{event['args'].get('op_name')} {event['name'][: -len('_kernel_time')]}"].append(event["dur"])
    return {key: float(np.median(values)) for key, values in times.items()}


def latency_table(paths: dict[str, Path], batches: tuple[int, ...], runs: int, threads: int,
                  feeds: dict | None = None) -> dict[str, dict[int, float]]:  # fmt: skip
    spec = LatencySpec(batch_sizes=batches, runs=runs, warmup=5, intra_op_threads=threads)
    result = measure_latency({name: str(path) for name, path in paths.items()}, spec, feeds)
    table: dict[str, dict[int, float]] = collections.defaultdict(dict)
    for measurement in result.measurements:
        table[measurement.model][measurement.batch_size] = measurement.median_ms
    return dict(table)


def mnist_case(folder: Path, runs: int, threads: tuple[int, ...]) -> dict:
    paths = mnist_exports(folder)
    feed = {"input": np.random.default_rng(0).standard_normal((32, 1, 28, 28)).astype(np.float32)}
    return {
        "accuracy": {name: accuracy(path) for name, path in paths.items()},
        "latency_ms": {t: latency_table(paths, (1, 32, 256), runs, t) for t in threads},
        "node_us_batch32": {name: node_times(paths[name], feed, runs) for name in ("fp32", "ours", "ours-all-int8")},
    }


def minilm_models(folder: Path) -> tuple[dict[str, Path], dict[str, torch.nn.Module]]:
    ids = torch.randint(1000, 2000, (8, MINILM_TOKENS), generator=torch.Generator().manual_seed(0))
    example = (ids, torch.ones_like(ids))
    paths = {"fp32": save_float(build_model("builtin:minilm"), example, folder / "minilm_fp32.onnx")}
    models = {}
    for name, settings in (("ours-int8", QuantSettings(act_signed=False, act_dynamic=True)),
                           ("ours-int4", QuantSettings(weight_bits=4, act_bits=None, weight_block=32))):  # fmt: skip
        model = build_model("builtin:minilm")
        layers = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder.layer." in n]
        quantize_model_(model, {layer: settings for layer in layers}, [])
        paths[name] = export_onnx(model, example, folder / f"minilm_{name}.onnx", "ort")
        models[name] = model
    paths["ort-quantize_dynamic"] = ort_dynamic(paths["fp32"], folder / "minilm_ort_dynamic.onnx")
    return paths, models


def embeddings(path: Path, inputs: tuple[torch.Tensor, torch.Tensor], threads: int = 2) -> np.ndarray:
    session = ort_session(path, threads)
    return session.run(None, {"input": inputs[0].numpy(), "input1": inputs[1].numpy()})[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def minilm_case(folder: Path, runs: int, threads: tuple[int, ...]) -> dict:
    paths, models = minilm_models(folder)
    heldout = load_data("builtin:sentences", "heldout", "heldout")
    inputs = (heldout.inputs[0], heldout.inputs[1])
    reference = embeddings(paths["fp32"], inputs)
    fidelity = {name: cosine(embeddings(path, inputs), reference) for name, path in paths.items()}
    parity = {}
    for name, model in models.items():
        with torch.no_grad():
            expected = model(*inputs).numpy()
        got = embeddings(paths[name], inputs)
        parity[name] = {"max_abs_diff": float(np.abs(got - expected).max()), "mean_cosine": cosine(got, expected)}
    ids = torch.randint(1000, 2000, (8, MINILM_TOKENS), generator=torch.Generator().manual_seed(1)).numpy()
    mask = np.ones_like(ids)
    mask[4:, 96:] = 0  # some padded sequences, as in real batches
    feeds = {name: {"input": ids, "input1": mask} for name in paths}
    return {
        "num_sentences": len(heldout),
        "mean_cosine_to_fp32": fidelity,
        "parity_vs_pytorch_fake_quant": parity,
        "latency_ms_batch8x128": {t: latency_table(paths, (8,), runs, t, feeds) for t in threads},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model (>= 30)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        results = {"mnist-cnn": mnist_case(Path(tmp), args.runs, tuple(args.threads))}
        if not args.skip_minilm:
            results["minilm"] = minilm_case(Path(tmp), args.runs, tuple(args.threads))
    print(json.dumps(results, indent=1, default=str))
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
