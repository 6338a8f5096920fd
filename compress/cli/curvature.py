"""``compress curvature MODEL --data D``: per-layer Hessian traces ± error, top eigenvalues,
spectral density. Under ``torchrun`` the data is sharded over the ranks (gloo)."""

from __future__ import annotations

import argparse
import os


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "curvature", parents=[parent], help="per-layer Hessian traces, top eigenvalues, spectral density",
        description="Loss curvature of every layer (module) at the model's weights, in eval mode, over "
        "the calibration data: Hessian-block traces with standard errors, top eigenvalues (Lanczos), "
        "spectral density (stochastic Lanczos quadrature).")
    add_curvature_options(parser)
    parser.add_argument_group("output").add_argument(
        "--plot", metavar="PNG", help="write the density and per-layer traces as a picture")
    parser.set_defaults(run=run)


def add_model_data_options(parser: argparse.ArgumentParser, max_samples: int | None = None,
                           max_samples_help: str = "compute on a random N of the split; the ± then adds the data part "
                           "of the error (default: all of it)") -> None:
    """MODEL, --data, --split, --weights, --task, --seq-len, --max-samples, --batch-size (shared with
    ``compress plan``)."""
    group = parser.add_argument_group("model and data")
    group.add_argument("model", metavar="MODEL", help="builtin:NAME, torchvision:NAME, hf:FOLDER, FILE.py:FACTORY, "
                       "FILE.pt/.pt2 or a compressed checkpoint directory")
    group.add_argument("--data", required=True, metavar="D",
                       help="calibration data: builtin:NAME, FILE.py:FACTORY, an image folder or a .txt/.jsonl text "
                       "file (hf: models)")
    group.add_argument("--split", choices=("train", "heldout", "all"),
                       help="which part of the data (default: train for builtin data, all otherwise)")
    group.add_argument("--weights", metavar="PATH", help="state_dict file to load into MODEL (weights_only)")
    add_text_options(group)
    group.add_argument("--max-samples", type=int, default=max_samples, metavar="N", help=max_samples_help)
    group.add_argument("--batch-size", type=int, default=128, metavar="N",
                       help="batch size (default 128; token data is read in batches halved while more than a "
                            "quarter of the slots would be padding, down to 16)")


def add_text_options(group: argparse._ActionsContainer, task: bool = True) -> None:
    """--task (the head of an hf: model) and --seq-len (tokens per block of causal-LM text data)."""
    if task:
        from compress.models.tasks import TASKS

        group.add_argument("--task", choices=TASKS, help="the head of an hf: model (default: the one its config's "
                           "architectures name)")
    group.add_argument("--seq-len", type=int, metavar="N", help="tokens per block of text data for a causal LM "
                       "(required there; encoders: truncation length, default min(128, the model's maximum))")


def add_curvature_options(parser: argparse.ArgumentParser, **model_data: object) -> argparse._ArgumentGroup:
    """MODEL, --data and the estimator's options (shared with ``compress plan``); returns the
    curvature group."""
    add_model_data_options(parser, **model_data)
    group = parser.add_argument_group("curvature")
    group.add_argument("--method", choices=("auto", "hutchinson", "gauss-newton", "kfac", "kflr"), default="auto",
                       help="traces from Hessian probes (hutchinson), output-space Gauss-Newton probes, or the "
                       "Kronecker-factored Gauss-Newton of Linear/Conv2d layers (kfac: sampled labels; kflr: exact, "
                       "one backward per output); auto: gauss-newton for the distill loss, else hutchinson")
    group.add_argument("--loss", choices=("auto", "ce", "distill"), default="auto",
                       help="ce needs targets; distill = self-distillation (Gauss-Newton); auto picks")
    group.add_argument("--rel-error", type=float, default=0.05,
                       help="stop when every layer is within this relative error at 95%% (default %(default)s)")
    group.add_argument("--max-products", type=int, default=400, metavar="N",
                       help="budget of products (probes) for the traces (default %(default)s)")
    group.add_argument("--max-seconds", type=float, default=None, metavar="S",
                       help="wall-clock budget; stops with the error bars reached (default: none, run until "
                       "converged or --max-products)")
    group.add_argument("--deflation-steps", type=int, default=40, metavar="K",
                       help="Lanczos steps whose subspace is traced exactly (default 40)")
    group.add_argument("--top-k", type=int, default=5, metavar="K",
                       help="how many of the largest eigenvalues to report (default 5)")
    group.add_argument("--slq-runs", type=int, default=1, metavar="N",
                       help="Lanczos runs for the spectral density, the deflation run included (default 1)")
    group.add_argument("--product", choices=("reverse-over-reverse", "forward-over-reverse", "ggn"),
                       default="reverse-over-reverse", help="how products are computed (ggn: Gauss-Newton)")
    group.add_argument("--no-reuse-graphs", dest="reuse_graphs", action="store_false",
                       help="rebuild each batch's gradient graph for every product (less memory, slower)")
    group.add_argument("--memory-budget", type=float, default=6.0, metavar="GB",
                       help="resident memory that batched output-space probes may fill (default %(default)g)")
    group.add_argument("--probes-per-pass", type=int, default=1, metavar="K",
                       help="output-space probes per batched backward pass, capped by --memory-budget (default 1: "
                       "batching pays on small nets, not on a transformer on CPU)")
    group.add_argument("--exact", action="store_true", help="dense float64 Hessian (tiny models only)")
    group.add_argument("--allow-nondeterministic", action="store_true",
                       help="skip the check that two forward passes agree")
    return group


def curvature_spec(args: argparse.Namespace):
    """The CurvatureSpec the options describe."""
    from compress.curvature.estimate import CurvatureSpec
    from compress.curvature.trace import TraceSpec

    _check_positive(args)
    trace = TraceSpec(rel_error=args.rel_error, deflation_steps=args.deflation_steps,
                      max_products=args.max_products, max_seconds=args.max_seconds, seed=args.seed)
    return CurvatureSpec(loss=args.loss, batch_size=args.batch_size, max_samples=args.max_samples,
                         method=args.method, product=args.product, trace=trace,
                         top_k=args.top_k, slq_runs=args.slq_runs,
                         allow_nondeterministic=args.allow_nondeterministic, exact=args.exact,
                         reuse_graphs=args.reuse_graphs, memory_budget=args.memory_budget * 1e9,
                         probes_per_pass=args.probes_per_pass)


def run(args: argparse.Namespace) -> int:
    from compress.pipeline.curvature import measure_curvature

    rank = _init_distributed()
    try:
        _, data, curvature = measure_curvature(args.model, args.data, curvature_spec(args), args.weights,
                                               args.split, args.task, args.seq_len)
        if rank == 0:
            _report(args, curvature, data.name, len(data))
    finally:
        _finish_distributed()
    return 0


def _report(args: argparse.Namespace, curvature, data_name: str, num_samples: int) -> None:
    from pathlib import Path

    from compress.jsonio import write_json

    used = f"a random {curvature.num_samples} of {num_samples}" if curvature.num_samples < num_samples else "all"
    _print_table(curvature, f"compress curvature: {args.model} on {data_name} ({used} samples)")
    if args.json:
        write_json(args.json, curvature.to_dict())
    if args.plot:
        from compress.curvature.plot import plot_curvature

        plot_curvature(curvature, Path(args.plot), f"{args.model} on {data_name}")


def _check_positive(args: argparse.Namespace) -> None:
    from compress.errors import InputError

    for option in ("max_samples", "batch_size", "max_products", "top_k", "probes_per_pass"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            raise InputError(f"{option} must be at least 1, got {getattr(args, option)}")
    if not args.memory_budget > 0:
        raise InputError(f"memory_budget must be positive (GB), got {args.memory_budget}")
    if not 0 < args.rel_error < 1:
        raise InputError(f"rel_error must be between 0 and 1, got {args.rel_error}")


def _init_distributed() -> int:
    """Join the process group when launched by torchrun (gloo works on CPU); return this rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank()


def _finish_distributed() -> None:
    """Wait for every rank, then leave the process group (a rank exiting early aborts gloo)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _print_table(curvature, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from compress.cli.tables import add_layer_column, print_table
    from compress.curvature.trace import Z95

    table = Table(title=title)
    add_layer_column(table, curvature.layers)
    for column in ("params", "trace", "± (95%)", "± probes", "± data", "trace / param"):
        table.add_column(column, justify="right")
    for name, layer in curvature.layers.items():
        table.add_row(name, f"{layer.num_params:,}", f"{layer.trace:.5g}", f"{Z95 * layer.trace_stderr:.2g}",
                      f"{Z95 * layer.trace_stderr_probe:.2g}", f"{Z95 * layer.trace_stderr_data:.2g}",
                      f"{layer.trace / layer.num_params:.3g}")
    total_params = sum(layer.num_params for layer in curvature.layers.values())
    table.add_row("total", f"{total_params:,}", f"{curvature.trace:.5g}", f"{Z95 * curvature.trace_stderr:.2g}",
                  f"{Z95 * curvature.trace_stderr_probe:.2g}", f"{Z95 * curvature.trace_stderr_data:.2g}",
                  f"{curvature.trace / max(total_params, 1):.3g}", style="bold")
    print_table(table)
    console = Console()
    eigenvalues = ", ".join(f"{v:.4g}" for v in curvature.top_eigenvalues)
    console.print(f"top eigenvalues: {eigenvalues}")
    console.print(f"degeneracy ratio {curvature.degeneracy_ratio:.3f}, negative mass {curvature.negative_mass:.3f}; "
                  f"loss {curvature.loss} = {curvature.loss_value:.4g}; {curvature.num_hvps} products, "
                  f"{curvature.seconds:.1f} s, method: {curvature.method}")
    if not curvature.converged:
        console.print("[yellow]not every layer reached the requested error: raise --max-products / --max-seconds "
                      "for the probe part, or --max-samples for the data part[/yellow]")
