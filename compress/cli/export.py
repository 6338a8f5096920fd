"""``compress export CHECKPOINT --target ort|tensorrt|onnx|hf -o OUT``: ONNX Q/DQ, checked for the
target, with parity against the PyTorch fake-quant model recorded next to it; or (hf) a
transformers folder in the compressed-tensors layout, loaded back to measure parity.
argv → ``compress.pipeline.export`` → print."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    from compress.cli.curvature import add_text_options
    from compress.vocab.targets import EXPORT_TARGETS

    parser = subparsers.add_parser(
        "export", parents=[parent], help="write ONNX Q/DQ for ONNX Runtime or TensorRT, with parity figures",
        description="Export a compressed checkpoint (from `compress apply`) to ONNX with explicit Q/DQ. ort: "
        "checks that ONNX Runtime fuses every quantized layer into an integer kernel and names any Q/DQ left "
        "unfused; tensorrt: checks TensorRT's explicit-quantization rules and builds and times an engine where "
        "TensorRT and a GPU are present (otherwise says why it skipped); onnx: the plain Q/DQ graph. Parity "
        "(max error in output quantization steps, top-1 agreement) against the PyTorch model is measured on "
        "the held-out data and written as model.parity.json. hf: a transformers folder (OUT/hf) in the "
        "compressed-tensors pack-quantized layout (weight-only layers), loaded back with transformers to "
        "measure parity where compressed-tensors is installed.")
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="compressed checkpoint directory")
    parser.add_argument("--target", choices=EXPORT_TARGETS, default="ort", help="backend (default ort)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--data", help="data for parity (default: the recipe's evaluation data)")
    add_text_options(parser, task=False)
    parser.add_argument("--force", action="store_true", help="replace an existing export in DIR")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from compress.pipeline.export import export_checkpoint

    artifact = export_checkpoint(args.checkpoint, args.output, args.target, args.data, args.force, args.seq_len)
    _print(artifact)
    if args.json:
        from compress.jsonio import write_json

        write_json(args.json, artifact.to_dict())
    return 0


def _print(artifact) -> None:
    from rich.console import Console

    console = Console()
    parity = artifact.parity
    if artifact.target == "hf":
        measured = (f"parity max |Δ| {parity['max_abs_error']:.3g}, mean cosine {parity['mean_cosine']:.6f} over "
                    f"{parity['num_examples']}" if parity["status"] == "measured" else f"parity skipped: {parity['reason']}")
        console.print(f"[bold]{artifact.folder}[/bold] (hf): {measured}")
        return
    console.print(f"[bold]{artifact.onnx}[/bold] ({artifact.target}): parity max {parity['max_error_steps']:.3g} "
                  f"output steps, top-1 agreement {parity['top1_agreement']:.2%} over {parity['num_examples']}")
    if artifact.size is not None:
        size = artifact.size
        console.print(f"file {size.file:,} bytes: weights {size.weights:,}, graph {size.file - size.weights:,}")
        if size.reported_weights is not None and size.predicted_graph is not None:
            reported = size.reported_weights + size.predicted_graph
            console.print(f"reported {reported:,} bytes: weights {size.reported_weights:,}, graph {size.predicted_graph:,} "
                          f"(predicted); file ÷ reported {size.file / reported:.3f}")
    if artifact.fusion is not None:
        fused = ", ".join(f"{op}×{n}" for op, n in sorted(artifact.fusion.fused.items())) or "none"
        console.print(f"ONNX Runtime fused kernels: {fused}")
        if artifact.fusion.unfused_qdq:
            console.print(f"[yellow]unfused Q/DQ (slower than float): {', '.join(artifact.fusion.unfused_qdq)}[/yellow]")
    if artifact.tensorrt is not None:
        engine = artifact.tensorrt.engine
        status = (f"skipped: {engine['reason']}" if engine["status"] == "skipped"
                  else f"built, median {engine['median_ms']:.4f} ms")
        console.print(f"TensorRT rules: passed; engine {status}")
