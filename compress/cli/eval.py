"""``compress eval MODEL --data D``: accuracy (classifiers) or embedding fidelity, and size."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "eval",
        parents=[parent],
        help="accuracy or embedding fidelity, and size, of a model on data",
        description="Top-1 accuracy when the data has labels; otherwise the mean cosine similarity "
        "of the model's outputs to a reference model's (default: the same spec and weights).",
    )
    parser.add_argument("model", metavar="MODEL", help="builtin:NAME, torchvision:NAME, FILE.py:FACTORY or FILE.pt")
    parser.add_argument("--data", required=True, metavar="D", help="builtin:NAME, FILE.py:FACTORY or an image folder")
    parser.add_argument("--split", choices=("train", "heldout", "all"),
                        help="which part of the data (default: heldout for builtin data, all otherwise)")
    parser.add_argument("--weights", metavar="PATH", help="state_dict file to load into MODEL")
    parser.add_argument("--reference", metavar="MODEL", help="reference model for data without labels")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from compress.data.spec import load_data
    from compress.errors import InputError
    from compress.evaluation import evaluate
    from compress.jsonio import write_json
    from compress.models.spec import build_model

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    model = build_model(args.model, args.weights)
    data = load_data(args.data, args.split, default_builtin_split="heldout")
    reference = None
    if not data.has_targets:
        reference = build_model(args.reference) if args.reference else _default_reference(args, model)
    result = evaluate(model, args.model, data, reference, args.batch_size)
    _print_result(result)
    if args.json:
        write_json(args.json, result.to_dict())
    return 0


def _default_reference(args: argparse.Namespace, model):
    """A compressed checkpoint is compared with the uncompressed model it came from; any other
    model with itself (fidelity 1 by construction, so give --reference)."""
    from pathlib import Path

    from compress.apply.checkpoint import is_checkpoint, read_info
    from compress.models.spec import build_model

    if is_checkpoint(Path(args.model)):
        info = read_info(Path(args.model))
        return build_model(info.model_spec, info.model_weights)
    return model


def _print_result(result: "object") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"compress eval: {result.model} on {result.data}")
    for column in ("samples", result.metric, "params", "size (MB)", "seconds"):
        table.add_column(column, justify="right")
    value = f"{100 * result.value:.2f}%" if result.metric == "accuracy" else f"{result.value:.5f}"
    table.add_row(str(result.num_samples), value, f"{result.num_params:,}", f"{result.size_mb:.3f}",
                  f"{result.seconds:.2f}")
    Console().print(table)
