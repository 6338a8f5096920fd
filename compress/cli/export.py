"""``compress export CHECKPOINT --target ort|tensorrt|onnx -o OUT``: ONNX Q/DQ, checked for the
target, with parity against the PyTorch fake-quant model recorded next to it."""

from __future__ import annotations

import argparse

TARGETS = ("ort", "tensorrt", "onnx")


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "export", parents=[parent], help="write ONNX Q/DQ for ONNX Runtime or TensorRT, with parity figures",
        description="Export a compressed checkpoint (from `compress apply`) to ONNX with explicit Q/DQ. ort: "
        "checks that ONNX Runtime fuses every quantized layer into an integer kernel and names any Q/DQ left "
        "unfused; tensorrt: checks TensorRT's explicit-quantization rules and builds and times an engine where "
        "TensorRT and a GPU are present (otherwise says why it skipped); onnx: the plain Q/DQ graph. Parity "
        "(max error in output quantization steps, top-1 agreement) against the PyTorch model is measured on "
        "the held-out data and written as model.parity.json.")
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="compressed checkpoint directory")
    parser.add_argument("--target", choices=TARGETS, default="ort", help="backend (default ort)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--data", help="data for parity (default: the recipe's evaluation data)")
    parser.add_argument("--force", action="store_true", help="replace an existing export in DIR")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from compress.apply.checkpoint import is_checkpoint, load_checkpoint
    from compress.errors import InputError

    source, out = Path(args.checkpoint), Path(args.output)
    if not is_checkpoint(source):
        raise InputError(f"{source} is not a compressed checkpoint directory (write one with `compress apply`)")
    onnx_path = out / "model.onnx"
    if onnx_path.exists() and not args.force:
        raise InputError(f"{onnx_path} exists; pass --force to replace it or choose another -o")
    model, info = load_checkpoint(source)
    data = _heldout(args.data or info.recipe["data"].get("eval") or info.recipe["data"]["calibration"])
    try:
        summary = export_checkpoint(model, data, onnx_path, args.target)
    except BaseException:  # a half-written export must not block the next attempt
        for partial in (onnx_path, onnx_path.with_suffix(".parity.json"), onnx_path.with_name("model.optimized.onnx")):
            partial.unlink(missing_ok=True)
        raise
    _print(summary, onnx_path)
    if args.json:
        from compress.jsonio import write_json

        write_json(args.json, summary)
    return 0


def export_checkpoint(model, data, onnx_path, target: str) -> dict[str, object]:
    """Export, check for the target, measure parity; a summary of all three."""
    from compress.export.onnx_qdq import export_onnx
    from compress.backends.ort.parity import measure_parity, write_parity

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    batches = [batch.inputs for batch in data.batches(256)]
    export_onnx(model, batches[0], onnx_path, "tensorrt" if target == "tensorrt" else "ort")
    parity = measure_parity(model, onnx_path, batches)
    write_parity(parity, onnx_path)
    summary: dict[str, object] = {"target": target, "onnx": str(onnx_path), "parity": parity.to_dict()}
    if target == "ort":
        summary["fusion"] = _fusion(onnx_path)
    if target == "tensorrt":
        summary["tensorrt"] = _tensorrt(onnx_path)
    return summary


def _fusion(onnx_path) -> dict[str, object]:
    from compress.backends.ort.fusion import check_fusion

    report = check_fusion(onnx_path, onnx_path.with_name("model.optimized.onnx"))
    return {"fused": report.fused, "unfused_qdq": list(report.unfused_qdq), "float_layers": list(report.float_layers)}


def _tensorrt(onnx_path) -> dict[str, object]:
    from compress.errors import InputError
    from compress.backends.tensorrt.engine import build_and_time_engine, unavailable_reason
    from compress.backends.tensorrt.rules import check_tensorrt_qdq

    violations = check_tensorrt_qdq(onnx_path)
    if violations:
        raise InputError(f"{onnx_path} breaks {len(violations)} TensorRT rule(s), e.g. {violations[0]}")
    reason = unavailable_reason()
    engine = {"status": "skipped", "reason": reason} if reason else build_and_time_engine(onnx_path).to_dict()
    return {"rules": "passed", "engine": engine}


def _heldout(spec: str):
    from compress.data.spec import load_data

    return load_data(spec, None, "heldout")


def _print(summary: dict, onnx_path) -> None:
    from rich.console import Console

    console = Console()
    parity = summary["parity"]
    console.print(f"[bold]{onnx_path}[/bold] ({summary['target']}): parity max {parity['max_error_steps']:.3g} "
                  f"output steps, top-1 agreement {parity['top1_agreement']:.2%} over {parity['num_examples']}")
    fusion = summary.get("fusion")
    if fusion is not None:
        fused = ", ".join(f"{op}×{n}" for op, n in sorted(fusion["fused"].items())) or "none"
        console.print(f"ONNX Runtime fused kernels: {fused}")
        if fusion["unfused_qdq"]:
            console.print(f"[yellow]unfused Q/DQ (slower than float): {', '.join(fusion['unfused_qdq'])}[/yellow]")
    trt = summary.get("tensorrt")
    if trt is not None:
        engine = trt["engine"]
        status = (f"skipped: {engine['reason']}" if engine["status"] == "skipped"
                  else f"built, median {engine['median_ms']:.4f} ms")
        console.print(f"TensorRT rules: passed; engine {status}")
