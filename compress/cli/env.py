"""``compress env``: versions, and which optional backends are usable here."""

from __future__ import annotations

import argparse
import importlib
import platform
from typing import Callable

OPTIONAL = ("torchvision", "transformers", "onnx", "onnxruntime", "tensorrt", "triton")


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("env", parents=[parent], help="versions and usable backends",
                                   description="Versions of Python, torch and the optional backends, "
                                   "and whether each one imports and works here.")
    parser.set_defaults(run=run)


def probe(module: str, detail: Callable[[object], str] | None = None) -> dict[str, object]:
    """Import ``module``; report its version, whether it is usable, and why not."""
    try:
        imported = importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken build raising anything at import
        return {"usable": False, "version": None, "detail": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    return {"usable": True, "version": getattr(imported, "__version__", "unknown"),
            "detail": detail(imported) if detail else ""}


def collect() -> dict[str, dict[str, object]]:
    import torch

    from compress import __version__

    report = {
        "python": {"usable": True, "version": platform.python_version(), "detail": platform.platform()},
        "compress": {"usable": True, "version": __version__, "detail": ""},
        "torch": {"usable": True, "version": torch.__version__,
                  "detail": f"{torch.get_num_threads()} threads"},
    }
    details: dict[str, Callable[[object], str]] = {
        "onnxruntime": lambda ort: ", ".join(ort.get_available_providers()),
    }
    for module in OPTIONAL:
        report[module] = probe(module, details.get(module))
    gpu = torch.cuda.is_available()
    report["gpu"] = {"usable": gpu, "version": torch.version.cuda,
                     "detail": torch.cuda.get_device_name(0) if gpu else "no CUDA device"}
    return report


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from compress.jsonio import write_json

    report = collect()
    table = Table(title="compress env")
    for column in ("component", "usable", "version", "detail"):
        table.add_column(column)
    for name, row in report.items():
        table.add_row(name, "yes" if row["usable"] else "no", str(row["version"] or "-"), str(row["detail"]))
    Console().print(table)
    if args.json:
        write_json(args.json, report)
    return 0
