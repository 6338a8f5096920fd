"""Peers of ``benchmarks/reconstruct.py`` at equal bits and grid, weights only, no fine-tuning.

- ONNX Runtime's own ``MatMulNBitsQuantizer`` on the exported float builtin:minilm (every MatMul with
  a weight initializer: the 36 encoder linears), 4 bits, per channel and in blocks of 32 and 128:
  its default (ORT round-to-nearest, symmetric and asymmetric), RTN, HQQ and GPTQ (the bundled
  Intel Neural Compressor code; calibration: the same 256 training sentences). Mean cosine of the
  ORT sentence embeddings to the float PyTorch model on the 64 held-out sentences.
- NVIDIA ModelOpt's GPTQ (``mtq.quantize`` with ``algorithm={"method": "gptq"}``, symmetric INT
  weights, activations float) on builtin:minilm (4 bits, per channel and blocks of 32 and 128, the
  encoder linears) and on builtin:mnist-cnn (BatchNorms folded; 2 and 3 bits per channel; GPTQ only
  updates linears, so its convs are rounded to nearest with max scales).
Each peer that fails records its error in one line.

Run: python benchmarks/reconstruct_peers.py [--part ort|modelopt-minilm|modelopt-mnist|all]
     [--json benchmarks/results/reconstruct_peers.json]
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reconstruct import accuracy, cosine, mnist_setup  # noqa: E402

from compress.data.spec import load_data  # noqa: E402
from compress.jsonio import write_json  # noqa: E402
from compress.models.spec import build_model  # noqa: E402

GRIDS = {"per channel": None, "blocks of 128": 128, "blocks of 32": 32}


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def sentences() -> tuple[list, list]:
    calibration = load_data("builtin:sentences", "train", "train")
    heldout = load_data("builtin:sentences", "heldout", "heldout")
    return [b.inputs for b in calibration.batches(32)], [b.inputs for b in heldout.batches(64)]


def float_token_model_onnx(model: nn.Module, example: tuple, output: str = "embedding") -> bytes:
    """A float (input_ids, attention_mask) model as ONNX with the transposed weights folded, so each
    linear is MatMul(x, W) with a constant W that ORT's quantizers can read."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, buffer, dynamo=False, opset_version=17, do_constant_folding=True,
                          input_names=["input_ids", "attention_mask"], output_names=[output],
                          dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}})
    return buffer.getvalue()


def feeds(inputs: list) -> list[dict[str, np.ndarray]]:
    return [{"input_ids": ids.numpy(), "attention_mask": mask.numpy()} for ids, mask in inputs]


def ort_cosine(proto_bytes: bytes, heldout: list, reference: list[torch.Tensor]) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(proto_bytes, options, providers=["CPUExecutionProvider"])
    total, count = 0.0, 0
    for feed, ref in zip(feeds(heldout), reference):
        out = torch.from_numpy(session.run(None, feed)[0])
        total += float(nn.functional.cosine_similarity(out, ref).sum())
        count += len(ref)
    return total / count


def ort_configs(block: int | None, calibration: list) -> dict:
    """name -> a function building the ``MatMulNBitsQuantizer`` keyword arguments for one grid (built
    lazily: a constructor that refuses the grid is that peer's recorded failure). Per channel, ORT's
    default quantizer only writes the QDQ form (DequantizeLinear per axis); its MatMulNBits form
    refuses channel-wise weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig, GPTQWeightOnlyQuantConfig, HQQWeightOnlyQuantConfig, RTNWeightOnlyQuantConfig)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds(calibration))

        def get_next(self):
            return next(self.items, None)

    channel = block is None
    size = 128 if channel else block  # ignored where channel_wised_quantize applies
    group = -1 if channel else block  # Intel Neural Compressor's "per channel" group size
    form = QuantFormat.QDQ if channel else QuantFormat.QOperator

    def default(symmetric: bool) -> dict:
        return dict(block_size=size, is_symmetric=symmetric, channel_wised_quantize=channel, quant_format=form,
                    algo_config=DefaultWeightOnlyQuantConfig(size, symmetric, quant_format=form,
                                                             channel_wised_quantize=channel))

    def gptq(refined: bool) -> dict:
        return dict(block_size=group, is_symmetric=True, algo_config=GPTQWeightOnlyQuantConfig(
            Reader(), block_size=128, actorder=refined, mse=refined, perchannel=True))

    configs = {
        "ort_default_sym": lambda: default(True),
        "ort_default_asym": lambda: default(False),
        "ort_rtn_sym": lambda: dict(block_size=group, is_symmetric=True, algo_config=RTNWeightOnlyQuantConfig()),
        "ort_hqq": lambda: dict(block_size=group, algo_config=HQQWeightOnlyQuantConfig(block_size=group, bits=4)),
        "ort_gptq_sym": lambda: gptq(False),
        "ort_gptq_sym_actorder_mse": lambda: gptq(True),
    }
    if channel:  # same writer as ort_rtn_sym: a MatMulNBits with block = K, which the kernel refuses
        for name in ("ort_gptq_sym", "ort_gptq_sym_actorder_mse"):
            configs[name] = None
    return configs


def ort_part(grids: dict, skip: tuple[str, ...] = ()) -> dict:
    import onnx
    import onnx.version_converter
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = build_model("builtin:minilm").eval()
    calibration, heldout = sentences()
    with torch.no_grad():
        reference = [model(*x) for x in heldout]
    float_bytes = float_token_model_onnx(model, heldout[0])
    # the QDQ form needs opset 21 (int4 DequantizeLinear); ORT only bumps the version number, so convert first
    opset21_bytes = onnx.version_converter.convert_version(onnx.load_from_string(float_bytes), 21).SerializeToString()
    results = {"ort_fp32": ort_cosine(float_bytes, heldout, reference)}
    print("ort fp32", results["ort_fp32"], flush=True)
    for label, block in grids.items():
        row = {}
        for name, make in ort_configs(block, calibration).items():
            if name in skip:
                continue
            if make is None:
                row[name] = {"failed": "not run: writes MatMulNBits with block = in_features, refused as ort_rtn_sym shows"}
                continue
            began = time.perf_counter()
            try:
                kwargs = make()
                source = float_bytes if kwargs.get("quant_format") != QuantFormat.QDQ else opset21_bytes
                quantizer = MatMulNBitsQuantizer(onnx.load_from_string(source), bits=4, **kwargs)
                quantizer.process()
                quantized = quantizer.model.model if hasattr(quantizer.model, "model") else quantizer.model
                ops = sorted({n.op_type for n in quantized.graph.node if n.op_type.startswith(("MatMul", "Dequant"))})
                row[name] = {"cosine": ort_cosine(quantized.SerializeToString(), heldout, reference),
                             "seconds": round(time.perf_counter() - began, 1), "matmul_ops": ops}
            except Exception as exc:  # noqa: BLE001 - a peer's failure is a result, recorded in one line
                row[name] = {"failed": one_line(exc)}
            print(label, name, row[name], flush=True)
        results[label] = row
    return results


def modelopt_weight_config(bits: int, block: int | None, skip: tuple[str, ...] = ()) -> dict:
    """Symmetric INT``bits`` weights (per output channel, or blocks along the input), activations float."""
    weight = {"num_bits": bits, "axis": 0} if block is None else {"num_bits": bits, "block_sizes": {-1: block}}
    cfg = [{"quantizer_name": "*", "enable": False}, {"quantizer_name": "*weight_quantizer", "cfg": weight}]
    cfg += [{"quantizer_name": pattern, "enable": False} for pattern in skip]
    return {"quant_cfg": cfg, "algorithm": {"method": "gptq", "block_size": 128}}


def modelopt_gptq(model: nn.Module, config: dict, batches: list) -> tuple[nn.Module, float]:
    import modelopt.torch.quantization as mtq

    def forward_loop(m: nn.Module) -> None:
        for inputs in batches:
            m(*inputs)

    began = time.perf_counter()
    with torch.no_grad():
        quantized = mtq.quantize(model, config, forward_loop)
    return quantized, round(time.perf_counter() - began, 1)


def modelopt_minilm_part(grids: dict) -> dict:
    model = build_model("builtin:minilm").eval()
    calibration, heldout = sentences()
    data = load_data("builtin:sentences", "heldout", "heldout")
    results = {}
    for label, block in grids.items():
        try:
            config = modelopt_weight_config(4, block, skip=("*pooler*",))
            quantized, seconds = modelopt_gptq(copy.deepcopy(model), config, calibration)
            results[label] = {"modelopt_gptq": cosine(quantized, model, data), "seconds": seconds}
        except Exception as exc:  # noqa: BLE001 - a peer's failure is a result
            results[label] = {"failed": one_line(exc)}
        print("modelopt minilm", label, results[label], flush=True)
    del heldout
    return results


def modelopt_mnist_part() -> dict:
    model, _, inputs, heldout = mnist_setup()
    results = {"fp32": accuracy(model, heldout)}
    for bits in (3, 2):
        try:
            quantized, seconds = modelopt_gptq(copy.deepcopy(model), modelopt_weight_config(bits, None), inputs)
            results[f"uniform {bits} bits"] = {"modelopt_gptq": accuracy(quantized, heldout), "seconds": seconds}
        except Exception as exc:  # noqa: BLE001 - a peer's failure is a result
            results[f"uniform {bits} bits"] = {"failed": one_line(exc)}
        print("modelopt mnist", bits, results[f"uniform {bits} bits"], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("ort", "modelopt-minilm", "modelopt-mnist", "all"), default="all")
    parser.add_argument("--grids", nargs="+", choices=list(GRIDS), default=list(GRIDS), help="MiniLM grids")
    parser.add_argument("--skip", nargs="*", default=[], help="ORT configurations not to run (e.g. ort_gptq_sym)")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.manual_seed(0)
    grids = {label: GRIDS[label] for label in args.grids}
    parts = {"ort": lambda: ort_part(grids, tuple(args.skip)), "modelopt-minilm": lambda: modelopt_minilm_part(grids),
             "modelopt-mnist": modelopt_mnist_part}
    report = {"threads": torch.get_num_threads()}
    for name, run in parts.items():
        if args.part in (name, "all"):
            report[name] = run()
            if args.json:
                write_json(args.json, report)


if __name__ == "__main__":
    main()
