"""``compress report``: accuracy, size and latency of each variant with the plan, curvature,
spectrum, sharpness and parity behind them, as report.json, report.md and report.html."""

from __future__ import annotations

import argparse

from compress.errors import InputError


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "report",
        parents=[parent],
        help="JSON, Markdown and a self-contained HTML report from the other commands' files",
        description="Assemble the files `compress curvature --json`, `compress plan`, `compress eval --json` "
        "and the latency harness wrote into report.json, report.md and one report.html with plots.",
    )
    parser.add_argument("--curvature", metavar="JSON", help="`compress curvature --json` output")
    parser.add_argument("--plan", metavar="YAML", help="plan YAML written by `compress plan`")
    parser.add_argument("--eval", action="append", default=[], metavar="NAME=JSON",
                        help="a variant's `compress eval --json` output, e.g. fp32=fp32.json (repeatable)")
    parser.add_argument("--latency", metavar="JSON", help="latency harness output (variants matched by name)")
    parser.add_argument("--finetune", metavar="JSON", help="fine-tuning result with the sharpness history")
    parser.add_argument("--parity", action="append", default=[], metavar="TARGET=JSON",
                        help="an exporter's parity figures, e.g. ort=model.parity.json (repeatable)")
    parser.add_argument("--measured", metavar="JSON", help="measured per-layer loss changes {layer: value}")
    parser.add_argument("--model", metavar="NAME", help="model name shown (default: from the plan or evals)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the report files")
    parser.add_argument("--force", action="store_true", help="overwrite an existing report in DIR")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from compress.jsonio import write_json
    from compress.pipeline.report import report_from_files
    from compress.report.summary import summary

    evals, parity = _named(args.eval, "--eval"), _named(args.parity, "--parity")
    report = report_from_files(args.output, args.model, args.curvature, args.plan, evals, args.latency,
                               args.finetune, parity, args.measured, args.force)
    inputs, paths = report.inputs, report.paths
    _print_summary(inputs, paths)
    if args.json:
        write_json(args.json, {"report": str(paths.html), "markdown": str(paths.markdown),
                               "json": str(paths.json), "summary": summary(inputs)})
    return 0


def _named(items: list[str], option: str) -> dict[str, str]:
    """NAME=PATH pairs, names unique."""
    named: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"{option} {item!r}: expected NAME=PATH, e.g. {option} fp32=fp32.json")
        if name in named:
            raise InputError(f"{option} name {name!r} given twice")
        named[name] = path
    return named


def _print_summary(inputs: "object", paths: "object") -> None:
    from rich.console import Console
    from rich.table import Table

    from compress.report.tables import variants_table

    table = variants_table(inputs)
    shown = Table(title=f"compress report: {inputs.model}")
    for header in table.headers[:4]:
        shown.add_column(header, justify="right")
    for row in table.rows:
        shown.add_row(*row[:4])
    console = Console()
    console.print(shown)
    console.print(f"report: {paths.html}")
