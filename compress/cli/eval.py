"""``compress eval MODEL --data D``: accuracy (classifiers) or embedding fidelity, and size.
argv → ``compress.pipeline.evaluate`` → print."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "eval",
        parents=[parent],
        help="accuracy, perplexity or embedding fidelity, and size, of a model on data",
        description="Top-1 accuracy when the data has labels; perplexity and the mean per-token KL to the "
        "reference when it has next-token targets (causal-LM text); otherwise the mean cosine similarity "
        "of the model's outputs to a reference model's (a checkpoint's reference is its uncompressed model; "
        "any other model needs --reference).",
    )
    from compress.cli.curvature import add_text_options

    parser.add_argument("model", metavar="MODEL", help="builtin:NAME, torchvision:NAME, hf:FOLDER, FILE.py:FACTORY, "
                        "FILE.pt or a compressed checkpoint directory")
    parser.add_argument("--data", required=True, metavar="D", help="builtin:NAME, FILE.py:FACTORY, an image folder "
                        "or a .txt/.jsonl text file (hf: models)")
    parser.add_argument("--split", choices=("train", "heldout", "all"),
                        help="which part of the data (default: heldout for builtin data, all otherwise)")
    parser.add_argument("--weights", metavar="PATH", help="state_dict file to load into MODEL")
    add_text_options(parser)
    parser.add_argument("--reference", metavar="MODEL", help="reference model for data without labels")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N", help="evaluation batch size (default 256)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from compress.jsonio import write_json
    from compress.pipeline.evaluate import evaluate_model

    result = evaluate_model(args.model, args.data, args.reference, args.batch_size, args.weights, args.split,
                            task=args.task, seq_len=args.seq_len)
    _print_result(result)
    if args.json:
        write_json(args.json, result.to_dict())
    return 0


def _print_result(result: "object") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"compress eval: {result.model} on {result.data}")
    kl = [] if result.mean_token_kl is None else [f"{result.mean_token_kl:.4g}"]
    graph = [] if result.graph_bytes is None else [f"{result.graph_bytes / 1e6:.3f}"]
    files = [] if result.checkpoint_bytes is None else [f"{result.checkpoint_bytes / 1e6:.3f}"]
    for column in ("samples", result.metric, *(["KL / token"] if kl else []), "params", "size (MB)",
                   *(["+ ONNX graph (MB, predicted)"] if graph else []),
                   *(["on disk (MB)"] if files else []), "seconds"):
        table.add_column(column, justify="right")
    value = f"{100 * result.value:.2f}%" if result.metric == "accuracy" else f"{result.value:.5f}"
    table.add_row(str(result.num_samples), value, *kl, f"{result.num_params:,}", f"{result.size_mb:.3f}", *graph,
                  *files, f"{result.seconds:.2f}")
    Console().print(table)
