"""``compress demo``: curvature → plan → apply (QAT+KD) → export (ORT) → report on builtin:mnist-cnn."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo", parents=[parent], help="the whole pipeline on builtin:mnist-cnn, ending with a report",
        description="Runs curvature, plan (avg 4 weight bits, int8 activations, sparsity allowed), apply with "
        "QAT+KD, export to ONNX Runtime, uniform INT8 and FP32 baselines, latency side by side and the report, "
        "each stage writing the file its command would; every intermediate file is kept in the output directory.")
    parser.add_argument("-o", "--output", default="compress-demo", metavar="DIR",
                        help="work directory (default ./compress-demo)")
    parser.add_argument("--force", action="store_true", help="replace an earlier demo in DIR")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import shutil
    import time
    from pathlib import Path

    from compress.demo import run_demo
    from compress.errors import InputError

    work = Path(args.output)
    if work.exists() and any(work.iterdir()):
        if not args.force:
            raise InputError(f"{work} is not empty; pass --force to replace the earlier demo or choose another -o")
        if not (work / "curvature.json").exists():
            raise InputError(f"{work} does not look like a demo directory; refusing to replace it")
        shutil.rmtree(work)
    start = time.perf_counter()
    report = run_demo(work, lambda stage: print(f"\n== {stage}", flush=True))
    _print_summary(work, report, time.perf_counter() - start)
    return 0


def _print_summary(work, report, seconds: float) -> None:
    import json

    from rich.console import Console
    from rich.table import Table

    latency = json.loads((work / "latency.json").read_text())["measurements"]
    table = Table(title=f"compress demo: builtin:mnist-cnn ({seconds / 60:.1f} min)")
    for column in ("variant", "accuracy", "size (MB)", "ORT ms (batch 1)", "ORT ms (batch 32)"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, file in (("fp32", "fp32"), ("uniform int8", "int8"), ("plan", "plan")):
        result = json.loads((work / f"{file}.eval.json").read_text())
        times = {m["batch_size"]: m["median_ms"] for m in latency if m["model"] == name}
        table.add_row(name, f"{result['accuracy']:.2%}", f"{result['size_mb']:.4f}",
                      f"{times.get(1, float('nan')):.4f}", f"{times.get(32, float('nan')):.4f}")
    console = Console()
    console.print(table)
    console.print(f"report: {report.resolve()}")
