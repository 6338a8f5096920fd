"""``compress plan MODEL --data D --budget avg_bits=4 -o plan.yaml``: bits (and sparsity) per
layer from curvature, solved exactly under the budgets. argv → ``compress.pipeline.plan`` → print."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    from compress.cli.curvature import add_curvature_options
    from compress.pipeline.plan import PLAN_MAX_PROBES, PLAN_REL_ERROR

    parser = subparsers.add_parser(
        "plan", parents=[parent], help="bits and sparsity per layer under a budget, from curvature",
        description="Measure each layer's curvature trace (or read --curvature JSON; --method auto means "
        "Gauss-Newton here: never negative, until every layer is within --rel-error or --max-products probes), "
        "predict the loss increase of every option (HAWQ-style trace-weighted perturbation) and choose one option per "
        "Linear/Conv layer by an integer program under the budgets.")
    add_curvature_options(parser, max_samples=1024, max_samples_help="the plan's calibration set: the first N "
                          "samples of the split (default 1024); curvature and measurements use all of it").add_argument(
        "--curvature", metavar="JSON", help="reuse a `compress curvature --json` result instead of measuring")
    _candidate_options(parser.add_argument_group("candidates", "the options each layer may take"))
    _budget_options(parser.add_argument_group("budgets", "what the plan must fit and how it is chosen"))
    backend = parser.add_argument_group("backend", "the per-layer latency table behind latency_ms budgets")
    backend.add_argument("--backend", choices=("ort-cpu",),
                         help="measure a per-layer latency table on this backend (cached) for latency_ms budgets")
    backend.add_argument("--latency-batch", type=int, default=1, help="batch size the latency table times (default 1)")
    backend.add_argument("--threads", type=int, default=1, help="intra-op threads of the latency table (default 1)")
    backend.add_argument("--deploy-batch", type=int, default=32,
                         help="batch size candidate plans are timed at as whole models, besides 1 (default 32)")
    output = parser.add_argument_group("output")
    output.add_argument("-o", "--output", required=True, metavar="YAML", help="where to write the plan recipe")
    output.add_argument("--finetune", metavar="MODE", choices=("qat", "kd", "qat+kd"),
                        help="add a finetune: section (qat, kd or qat+kd; lr from the sharpness) to the recipe")
    output.add_argument("--force", action="store_true", help="overwrite an existing output file")
    # The plan's curvature (compress.pipeline.plan.plan_curvature_spec): Gauss-Newton traces under a
    # probe budget, not a clock, so the time scales with the model and every trace can converge.
    parser.set_defaults(run=run, max_seconds=None, max_products=PLAN_MAX_PROBES, rel_error=PLAN_REL_ERROR)


def _candidate_options(group) -> None:
    group.add_argument("--bits", default="2,3,4,8,fp32", help="candidate weight bits (default 2,3,4,8,fp32)")
    group.add_argument("--act-bits", default=None,
                       help="candidate activation bits of each layer's input, e.g. 8,fp32 (default: 8,fp32 with "
                       "--backend ort-cpu and hybrid sensitivity, else fp32: weights only); layers feeding one "
                       "residual add are tied to equal activation bits")
    group.add_argument("--sparsities", default="0", help="candidate pruned fractions (default 0)")
    group.add_argument("--patterns", default="unstructured", help="unstructured, 2:4, channel (comma-separated)")
    group.add_argument("--ranks", default="",
                       help="candidate rank ratios of Conv2d/Linear layers, e.g. 0.25,0.5,0.75: the share of a layer's "
                       "weights its two Fisher-weighted whitened low-rank factors keep (default: none)")
    group.add_argument("--override", action="append", default=[], metavar="NAME=CHOICE",
                       help="restrict a layer (exact name or re:REGEX) to options, e.g. head=w8 or "
                       "'re:block[.].*=w8|fp32'; repeat for several")
    group.add_argument("--sparsity-limit", choices=("exclude", "penalise", "off"), default="exclude",
                       help="options pruning past a layer's predicted limit (Zhang et al. 2023) are excluded "
                       "(default), penalised (at least ε·s/limit) or allowed")


def _budget_options(group) -> None:
    group.add_argument("--budget", action="append", default=[], metavar="NAME=VALUE",
                       help="avg_bits=4, size_mb=1.5, gbops=0.05 (giga bit-operations per sample) or "
                       "latency_ms=0.2 (needs --backend); repeat for several")
    group.add_argument("--sweep", metavar="NAME=LOW:HIGH:COUNT",
                       help="instead of one plan, the Pareto frontier of predicted Δloss over COUNT values of "
                       "one budget (other --budget values still hold); -o names the frontier JSON, a plot "
                       "is written next to it")
    group.add_argument("--sensitivity", choices=("hybrid", "trace"), default="hybrid",
                       help="trace: ½·(Tr/n)·‖ΔW‖² only; hybrid (default): the larger of that and the measured "
                       "loss change of compressing the layer alone (one forward pass per option)")
    group.add_argument("--verify", type=int, default=None, metavar="K",
                       help="hybrid only: measure the whole-plan calibration loss of the K allocations with the "
                       "least predicted loss and keep the best (default 8, or 1 where a layer has more than "
                       "2,048 inputs per output: each check reconstructs the whole model; 1 turns it off)")
    group.add_argument("--pricing", choices=("auto", "absorbed", "isolated"), default="auto",
                       help="absorbed: price each reconstructed option after apply's input-drift correction has "
                       "re-fitted the layers behind it (about half an apply per option); isolated: each layer "
                       "alone; auto (default): absorbed where that costs no more than verifying 8 plans")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from compress.cli.curvature import curvature_spec
    from compress.errors import InputError
    from compress.pipeline.plan import PlanMeasurements, gather, plan_inputs, with_default_verify
    from compress.plan.recipe import refuse_overwrite

    output = Path(args.output)
    refuse_overwrite(output, args.force)  # before the expensive part
    if not args.budget and not args.sweep:
        raise InputError("give a budget (--budget avg_bits=4) or a sweep (--sweep size_mb=0.01:0.09:9)")
    how = PlanMeasurements(args.sensitivity, args.backend, args.latency_batch, args.threads, args.batch_size,
                           args.deploy_batch)
    spec = _plan_spec(args, how)
    curvature = _read_curvature(args.curvature) if args.curvature else None
    model, data, curvature = plan_inputs(args.model, args.data, curvature, curvature_spec(args), args.max_samples,
                                         args.weights, args.split, spec, args.task, args.seq_len)
    if args.verify is None:
        spec = with_default_verify(spec, model)
    if args.curvature is None:
        target = "every layer within its target" if curvature.converged else "not every layer within its target"
        print(f"curvature: {curvature.method}, {curvature.num_hvps} products, {curvature.seconds:.0f} s, {target}")
    evidence = gather(model, data, curvature, spec, how)
    if evidence.latency is not None:
        table = evidence.latency
        print(f"latency table: {sum(map(len, table.milliseconds.values()))} entries on {table.backend}, batch "
              f"{how.latency_batch}, {how.threads} thread(s)")
    if args.sweep:
        return _run_sweep(args, model, curvature, spec, evidence, output)
    return _write_plan(args, model, curvature, spec, evidence, output)


def _plan_spec(args: argparse.Namespace, how):
    from compress.pipeline.plan import VERIFY, plan_spec
    from compress.plan.make import parse_budget
    from compress.plan.overrides import parse_override

    chosen = {} if args.act_bits is None else {"act_bits": _bits(args.act_bits, "act_bits")}
    return plan_spec(dict(parse_budget(b) for b in args.budget), how, bits=_bits(args.bits, "bits"),
                     sparsities=_floats(args.sparsities, "sparsities"), patterns=_patterns(args.patterns),
                     **chosen, ranks=_floats(args.ranks, "ranks") if args.ranks else (),
                     overrides=tuple(parse_override(o) for o in args.override), sparsity_limit=args.sparsity_limit,
                     verify=VERIFY if args.verify is None else args.verify, pricing=args.pricing)


def _write_plan(args, model, curvature, spec, evidence, output) -> int:
    from compress.jsonio import write_json
    from compress.pipeline.plan import plan_as_recipe, save_recipe, solve

    plan = solve(model, curvature, spec, evidence)
    finetune = None if args.finetune is None else {"mode": args.finetune}
    recipe = plan_as_recipe(plan, args.model, args.data, args.weights, finetune, args.task, args.seq_len)
    budgets = ", ".join(f"{k}={v:g}" for k, v in spec.budgets.items())
    save_recipe(recipe, output, f"compress plan: {args.model} on {args.data}, budget {budgets}", args.force)
    _print_plan(plan, output)
    if args.json:
        write_json(args.json, plan.to_dict())
    return 0


def _run_sweep(args, model, curvature, spec, evidence, output) -> int:
    from compress.jsonio import write_json
    from compress.pipeline.plan import sweep_plans
    from compress.plan.frontier import parse_sweep, plot_frontier
    from compress.plan.make import BUDGETS

    name, values = parse_sweep(args.sweep, BUDGETS)
    frontier = sweep_plans(model, curvature, spec, evidence, name, values)
    write_json(output, frontier.to_dict())
    picture = output.with_suffix(".png")
    plot_frontier(frontier, str(picture))
    _print_frontier(frontier, output, picture)
    return 0


def _read_curvature(path: str):
    import json

    from compress.curvature.result import Curvature
    from compress.errors import InputError

    try:
        return Curvature.from_dict(json.loads(open(path, encoding="utf-8").read()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read curvature {path}: {exc}; give a `compress curvature --json` file") from exc


def _bits(text: str, option: str) -> tuple[int | None, ...]:
    from compress.errors import InputError

    values = []
    for item in text.split(","):
        item = item.strip().lower()
        if item in ("fp32", "float", "32"):
            values.append(None)
        elif item.isdigit() and 2 <= int(item) <= 8:
            values.append(int(item))
        else:
            raise InputError(f"bad {option} entry {item!r}; use integers 2..8 or fp32")
    return tuple(values)


def _floats(text: str, option: str) -> tuple[float, ...]:
    from compress.errors import InputError

    try:
        values = tuple(float(item) for item in text.split(","))
    except ValueError:
        raise InputError(f"bad {option} {text!r}; give comma-separated fractions in [0, 1)") from None
    if not all(0 <= v < 1 for v in values):
        raise InputError(f"bad {option} {text!r}; every fraction must be in [0, 1)")
    return values


def _patterns(text: str) -> tuple[str, ...]:
    from compress.errors import InputError
    from compress.prune.masks import PATTERNS

    values = tuple(item.strip() for item in text.split(","))
    unknown = [v for v in values if v not in PATTERNS]
    if unknown:
        raise InputError(f"unknown pattern {unknown[0]!r}; choose from {', '.join(PATTERNS)}")
    return values


def _print_plan(plan, output) -> None:
    from rich.console import Console
    from rich.table import Table

    from compress.cli.tables import add_layer_column, print_table

    table = Table(title=f"compress plan -> {output}")
    add_layer_column(table, plan.layers)
    for column in ("weights", "trace", "choice", "predicted Δloss", "size (kB)", "sparsity limit"):
        table.add_column(column, justify="left" if column == "choice" else "right")
    for name, layer in plan.layers.items():
        limit = "-" if layer.sparsity_limit is None else f"{layer.sparsity_limit:.2f}"
        flag = "" if layer.trace_converged else " [yellow]*[/yellow]"
        table.add_row(name, f"{layer.num_weights:,}", f"{layer.trace:.4g} ± {layer.trace_stderr:.2g}{flag}",
                      layer.option().label(), f"{layer.predicted_delta_loss:.3g}",
                      f"{layer.storage_bits / 8e3:.2f}", limit)
    print_table(table)
    console = Console()
    if plan.unconverged:
        console.print(f"[yellow]* {len(plan.unconverged)} of {len(plan.layers)} traces unconverged (their 95% bar "
                      f"reaches 0; the plan priced them at its upper end): {', '.join(plan.unconverged)}; give "
                      "--max-products more probes[/yellow]", soft_wrap=True)
    totals = ", ".join(f"{k} {v:.4g}" for k, v in plan.totals.items())
    console.print(f"predicted Δloss {plan.predicted_delta_loss:.4g}; totals: {totals}; {plan.solver}")


def _print_frontier(frontier, output, picture) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"compress plan --sweep -> {output}, {picture}")
    for column in (frontier.budget_name, "achieved", "predicted Δloss", "choices"):
        table.add_column(column, justify="left" if column == "choices" else "right")
    for point in frontier.points:
        choices = ", ".join(sorted(set(point.choices.values())))
        table.add_row(f"{point.budget:.4g}", f"{point.totals[frontier.budget_name]:.4g}",
                      f"{point.predicted_delta_loss:.4g}", choices)
    console = Console()
    console.print(table)
    if frontier.infeasible:
        console.print(f"infeasible {frontier.budget_name}: {', '.join(f'{v:.4g}' for v in frontier.infeasible)}")
