"""The plan stage: ``make_plan(model, curvature, spec) -> Plan``.

Every compressible layer (``compress.vocab.layers``) gets one option (weight bits, activation
bits, sparsity, pattern) minimising the total predicted loss increase Σ Ω (``sensitivity.py``)
under the budgets, solved exactly (``allocation.py``). Channel options are planned per coupled
channel group (``channels.py``): every member carries the group's pruned fraction, ties make
them agree, and Ω, size, BOPs and latency are each member's share of the group, so the plan's
totals are what apply deploys. Other parameters (norms, embeddings) count in size as stored.
``totals["onnx_graph_mb"]`` is the graph an ONNX file adds to ``size_mb`` (``costs.graph_bytes``),
predicted from the chosen options and reported as its own line, never budgeted.
Rank options (``spec.ranks``, ``ranks.py``) factorise a layer into two, priced from the layers'
input statistics (``evidence.reconstruction``).

Ω prices what apply deploys: where apply reconstructs an option (GPTQ by default, ``reconstructed.py``)
and the evidence carries the reconstructions, Ω is the reconstructed weight's predicted loss change;
each layer records both that and the round-to-nearest Ω. With ``pricing: absorbed`` (``absorbed.py``;
``auto`` where cheap) a reconstructed option is priced — Ω and measured ΔL — after apply's input-drift
rule has re-fitted the layers behind it, since apply lets them absorb part of its error.
With a latency table and no latency budget, the plan is never slower than float in that table (Σ latency ≤ Σ FP32 latency) and, of plans of equal
predicted loss — equal to within the data's loss resolution (``PlanEvidence.loss_resolution``) — the
faster wins (``allocation.py``'s tie-break; the whole-plan verification keeps the same rule).
With a backend that times whole plans (``PlanEvidence.plan_latency``), measured sensitivities and no
latency budget, the summed table is only a tie-break: ``speed.py`` solves each activation pattern,
has the backend time the plans whole against FP32, and keeps the fastest that is faster than FP32
and as good as the best within the loss resolution (else the float-speed weight-only plan).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from torch import nn

from compress.curvature.result import Curvature
from compress.errors import ConfigError, InputError
from compress.plan.absorbed import PRICINGS, AbsorbedPrices, absorbable, auto_pricing
from compress.plan.allocation import Allocation, allocate, best_allocations
from compress.plan.channels import ChannelPlan, channel_plan
from compress.plan.costs import FLOAT_BITS, bops, effective_bits
from compress.plan.measured import SingleLayerLoss
from compress.plan.overrides import Override, restrict_options
from compress.plan.ranks import first_order_omega, rank_options, require_rank_evidence
from compress.plan.reconstructed import Reconstructions
from compress.plan.sensitivity import converged, safe_trace, sensitivity
from compress.plan.size import SizeModel, size_model
from compress.plan.ties import tie_tables
from compress.vocab.costs import LatencyCosts, PlanLatency, signed_activations
from compress.vocab.layers import compressible_layers
from compress.vocab.options import PATTERNS, LayerOption

BUDGETS = ("avg_bits", "size_mb", "gbops", "latency_ms")
SPARSITY_LIMIT_MODES = ("exclude", "penalise", "off")
WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8)
ACT_BITS = (8,)  # what the backends run


@dataclass(frozen=True)
class PlanSpec:
    """What the planner may choose and under which budgets; every field is checked on
    construction (``ConfigError`` naming the field, its value and what is allowed)."""

    budgets: dict[str, float]
    bits: tuple[int | None, ...] = (2, 3, 4, 8, None)
    sparsities: tuple[float, ...] = (0.0,)
    patterns: tuple[str, ...] = ("unstructured",)
    act_bits: tuple[int | None, ...] = (None,)
    overrides: tuple[Override, ...] = ()
    sparsity_limit: str = "exclude"  # what to do with options pruning past a layer's limit
    verify: int = 1  # with measurements: the best of this many least-Ω allocations by actual loss
    ranks: tuple[float, ...] = ()  # rank ratios offered per Conv2d/Linear layer (ranks.py); () = none
    pricing: str = "auto"  # isolated | absorbed (downstream drift re-fit, absorbed.py) | auto (absorbed where cheap)

    def __post_init__(self) -> None:
        problems = []
        for name, value in self.budgets.items():
            if name not in BUDGETS:
                problems.append(f"budget {name!r} is not allowed (allowed: {', '.join(BUDGETS)})")
            elif not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                problems.append(f"budget {name}={value!r} is not allowed (allowed: a positive number)")
        problems += _choices("bits", self.bits, WEIGHT_BITS)
        problems += _choices("act_bits", self.act_bits, ACT_BITS)
        if not self.sparsities or not all(isinstance(s, (int, float)) and 0 <= s < 1 for s in self.sparsities):
            problems.append(f"sparsities {self.sparsities!r} are not allowed (allowed: fractions in [0, 1))")
        if not self.patterns or any(p not in PATTERNS for p in self.patterns):
            problems.append(f"patterns {self.patterns!r} are not allowed (allowed: {', '.join(PATTERNS)})")
        if self.sparsity_limit not in SPARSITY_LIMIT_MODES:
            problems.append(f"sparsity_limit {self.sparsity_limit!r} is not allowed "
                            f"(allowed: {', '.join(SPARSITY_LIMIT_MODES)})")
        if not isinstance(self.ranks, tuple) or not all(isinstance(r, (int, float)) and 0 < r < 1 for r in self.ranks):
            problems.append(f"ranks {self.ranks!r} are not allowed (allowed: a tuple of rank ratios in (0, 1))")
        if self.pricing not in PRICINGS:
            problems.append(f"pricing {self.pricing!r} is not allowed (allowed: {', '.join(PRICINGS)})")
        if not isinstance(self.verify, int) or self.verify < 1:
            problems.append(f"verify {self.verify!r} is not allowed (allowed: an integer >= 1)")
        if not all(isinstance(o, Override) for o in self.overrides):
            problems.append("overrides must be Override values (see compress.plan.overrides.parse_override)")
        if problems:
            raise ConfigError("invalid plan spec: " + "; ".join(problems))

    def channel_sparsities(self) -> tuple[float, ...]:
        """The pruned fractions offered to channel groups (none unless ``channel`` is a pattern)."""
        return tuple(sorted({s for s in self.sparsities if s > 0})) if "channel" in self.patterns else ()

    def prunes(self) -> bool:
        """Whether any candidate prunes (a positive sparsity, or 2:4, which always prunes half)."""
        return any(s > 0 for s in self.sparsities) or "2:4" in self.patterns


def _choices(name: str, values: tuple, allowed: tuple[int, ...]) -> list[str]:
    if not isinstance(values, tuple) or not values or any(v is not None and v not in allowed for v in values):
        return [f"{name} {values!r} is not allowed (allowed: a non-empty tuple of {', '.join(map(str, allowed))} "
                "or None for float)"]
    return []


@dataclass(frozen=True)
class PlanEvidence:
    """What the planner measured besides the curvature (each part optional)."""

    measure: SingleLayerLoss | None = None  # single-layer ΔL, measured lazily
    sparsity_limits: dict[str, float] | None = None  # per-layer pruned-fraction limit (limits.py)
    loss_tolerance: float | None = None  # ε of the limits
    model_sparsity_limit: float | None = None
    macs: dict[str, float] | None = None  # per-sample MACs (macs.py), needed for gbops
    ties: list[tuple[str, ...]] | None = None  # residual groups (ties.py); None: not traced
    latency: LatencyCosts | None = None  # per-layer latency on the backend, needed for latency_ms
    reconstruction: Reconstructions | None = None  # what apply's GPTQ/SparseGPT deploys per option
    loss_resolution: float = 0.0  # loss differences the calibration data cannot resolve (ε/√batches)
    plan_latency: PlanLatency | None = None  # whole plans timed on the backend (``speed.py``)


@dataclass(frozen=True)
class LayerPlan:
    weight_bits: int | None
    sparsity: float
    pattern: str
    trace: float
    trace_stderr: float
    num_weights: int
    predicted_delta_loss: float
    storage_bits: float
    act_bits: int | None = None
    sparsity_limit: float | None = None
    latency_ms: float | None = None  # isolated-layer median on the plan's backend
    considered: dict[str, float] = field(default_factory=dict)  # label -> max(Ω, measured if measured); inf: excluded
    input_sparsity: float = 0.0  # the pruned fraction of the channel group feeding the layer
    trace_converged: bool = True  # False: the trace's 95% bar reaches 0; its upper end was used
    omega_first_order: float | None = None  # Ω of the chosen option rounded to nearest / magnitude-masked
    omega_reconstructed: float | None = None  # Ω of it as apply reconstructs it (None: not reconstructed)
    rank: int | None = None  # factorised at this rank (per group); None: kept whole
    omega_absorbed: float | None = None  # Ω of it after the downstream drift re-fit (absorbed.py; None: not so priced)

    def option(self) -> LayerOption:
        return LayerOption(self.weight_bits, self.sparsity, self.pattern, self.act_bits, self.input_sparsity,
                           self.rank)


@dataclass(frozen=True)
class Plan:
    layers: dict[str, LayerPlan]
    budgets: dict[str, float]
    totals: dict[str, float]
    predicted_delta_loss: float
    solver: str = "scipy.optimize.milp (HiGHS), optimal"
    tied_groups: list[tuple[str, ...]] | None = None
    loss_tolerance: float | None = None
    model_sparsity_limit: float | None = None
    measured_options: int = 0  # single-layer measurements made (lazily) for this plan and earlier ones
    verified: list[dict] | None = None  # the least-ΣΩ allocations with their measured whole-plan ΔL
    channel_groups: dict[str, list[str]] = field(default_factory=dict)  # group -> member layers planned together
    unconverged: list[str] = field(default_factory=list)  # layers whose trace estimate had not converged
    float_latency_ms: float | None = None  # Σ FP32 latency: the implicit bound without a latency budget
    loss_resolution: float = 0.0  # predicted-loss differences counted as ties (the faster wins them)
    speed_checked: list[dict] | None = None  # plans timed whole on the backend (``speed.py``), one chosen
    act_signed: bool = True  # int8 activations symmetric (False: asymmetric uint8, for ORT CPU)
    pricing: str = "isolated"  # how reconstructed options were priced: isolated, or absorbed (absorbed.py)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def plannable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers the planner plans: the compressible layers (``compress.vocab.layers``)."""
    return compressible_layers(model)


def candidate_options(spec: PlanSpec, weight_shape: tuple[int, ...], channels=None, in_channels: int = 0) -> list[LayerOption]:
    """Every bits × activation bits × (sparsity, pattern) × input-group fraction combination the
    layer can take: ``channel`` only for a layer producing a prunable group (``channels.out_group``),
    an input fraction only for a layer reading one (``channels.in_group`` of ``in_channels``
    channels); 2:4 needs a (remaining) reduction size divisible by 4 and always prunes half. A layer that
    reads and writes one group (a residual branch's last layer) removes the same fraction on both.
    Activation bits go with quantized weights only (measured: float-weight layers with 8-bit inputs
    exported unfused Q/DQ and ran the mnist-cnn plan at 0.16× FP32 on ORT at batch 32)."""
    produces = channels is not None and channels.out_group is not None
    reads = channels is not None and channels.in_group is not None
    same = produces and reads and channels.in_group == channels.out_group
    inputs = (0.0, *spec.channel_sparsities()) if reads else (0.0,)
    options = []
    for bits, act, sparsity, pattern, fraction in itertools.product(
            spec.bits, spec.act_bits, spec.sparsities, spec.patterns, inputs):
        if bits is None and act is not None:
            continue  # no integer kernel takes float weights: it deploys as unfused Q/DQ, slower than float
        if pattern == "2:4":
            columns = weight_shape[1] if not fraction else _kept_columns(in_channels, fraction, channels.in_block)
            if columns * int(np.prod(weight_shape[2:])) % 4 == 0:
                options.append(LayerOption(bits, 0.5, "2:4", act, fraction))
        elif sparsity == 0:
            options.append(LayerOption(bits, act_bits=act, input_sparsity=fraction))
        elif pattern != "channel" or produces:
            options.append(LayerOption(bits, sparsity, pattern, act, fraction))
    if same:
        options = [o for o in options if o.input_sparsity == o.channel_sparsity()]
    return list(dict.fromkeys(options))


def _kept_columns(channels: int, fraction: float, block: int) -> int:
    from compress.vocab.channels import kept_width

    return kept_width(channels, fraction) * block


def layer_options(model: nn.Module, spec: PlanSpec, channels: ChannelPlan | None = None) -> dict[str, list[LayerOption]]:
    """The candidate options of every plannable layer, in the order the plan indexes them: the
    ``candidate_options``, then the rank options (``ranks.rank_options``)."""
    layers = plannable_layers(model)
    if channels is None:
        channels = channel_plan(model, list(layers)) if spec.channel_sparsities() else ChannelPlan(model, {}, {})
    options = {}
    for name, module in layers.items():
        part = channels.layers.get(name)
        width = channels.groups[part.in_group].channels if part is not None and part.in_group else 0
        options[name] = candidate_options(spec, tuple(module.weight.shape), part, width) + \
            rank_options(module, spec.ranks, spec.bits)
    return options


def option_omegas(name: str, layer: nn.Module, info, option: LayerOption, evidence: PlanEvidence,
                  kept: tuple = (None, None)) -> tuple[float, float | None]:
    """(Ω of the option rounded to nearest / magnitude-masked, Ω of it as apply reconstructs it or
    None where apply does not reconstruct it or no reconstructions are in the evidence)."""
    trace = safe_trace(info.trace, info.trace_stderr)
    if option.rank is not None:  # priced from the deployed factors (ranks.py)
        weight = evidence.reconstruction.weight(name, option)
        return (first_order_omega(layer, weight, trace, info.num_params),
                evidence.reconstruction.omega(name, option, trace, info.num_params))
    first_order = sensitivity(layer.weight, trace, info.num_params, option, *kept)
    if evidence.reconstruction is None:
        return first_order, None
    return first_order, evidence.reconstruction.omega(name, option, trace, info.num_params)


def predicted_loss(omegas: tuple[float | None, ...], option: LayerOption, spec: PlanSpec,
                   evidence: PlanEvidence, limit: float | None) -> float:
    """Ω of what apply deploys — the last of (first-order, reconstructed, absorbed) Ω that is not
    None (``option_omegas``, ``absorbed.py``) — with the sparsity-limit rule applied; inf = excluded."""
    omega = [value for value in omegas if value is not None][-1]
    own = max(option.sparsity, option.input_sparsity)
    if limit is None or own <= limit or spec.sparsity_limit == "off":
        return omega
    if spec.sparsity_limit == "exclude":
        return np.inf
    return max(omega, evidence.loss_tolerance * own / max(limit, 1e-12))  # ε at the limit, linear past it


def make_plan(model: nn.Module, curvature: Curvature, spec: PlanSpec, evidence: PlanEvidence = PlanEvidence()) -> Plan:
    """The optimal allocation under ``spec.budgets``, the overrides, the residual ties and the
    channel-group ties, with each option's predicted loss max(Ω, measured ΔL) when
    ``evidence.measure`` is given (measured lazily: solve, measure the chosen options, solve again
    until every chosen option is measured)."""
    layers = plannable_layers(model)
    missing = [name for name in layers if name not in curvature.layers]
    if missing:
        raise InputError(f"the curvature has no trace for layer {missing[0]}; compute it for this model")
    names = list(layers)
    channels = channel_plan(model, names) if spec.channel_sparsities() else ChannelPlan(model, {}, {})
    options = layer_options(model, spec, channels)
    require_rank_evidence(any(o.rank for opts in options.values() for o in opts), evidence.reconstruction)
    if evidence.measure is None and any(o.act_bits for opts in options.values() for o in opts):
        raise InputError("activation-bit options need measured sensitivities (a SingleLayerLoss in the evidence)")
    allowed = restrict_options(options, spec.overrides)
    width = max(len(o) for o in options.values())
    omega = np.full((len(names), width), np.inf)
    omegas: dict[tuple[str, LayerOption], tuple[float, float | None, float | None]] = {}
    pricing = _pricing(spec, options, layers, evidence)
    absorbed = _absorbed_prices(pricing, options, curvature, evidence)
    for row, name in enumerate(names):
        limit = None if evidence.sparsity_limits is None else evidence.sparsity_limits[name]
        for column, option in enumerate(options[name]):
            kept = channels.kept_rows_columns(name, option)
            price = absorbed.omega(name, option) if absorbed is not None and absorbable(option) else None
            omegas[(name, option)] = (*option_omegas(name, layers[name], curvature.layers[name], option, evidence, kept),
                                      price)
            omega[row, column] = predicted_loss(omegas[(name, option)], option, spec, evidence, limit)
    _require_costs(spec, evidence)
    sizes = size_model(model, names, channels)
    folded = any(b is not None for b in spec.bits) or any(a is not None for a in spec.act_bits)
    costs = cost_tables(model, layers, options, evidence, width, sizes, folded)
    budgets, float_latency = _with_float_latency_bound(spec.budgets, evidence, names)
    tie_break = costs.get("latency_ms")
    act = _table_by_layer(options, names, width, lambda n, o: o.act_bits or 0)
    ties = tie_tables(evidence.ties or [], names, act) + group_ties(channels, names, options, width, spec)
    disallowed = _table_by_layer(options, names, width, lambda n, o: not allowed[n][options[n].index(o)]) > 0
    if evidence.measure is not None:
        evidence.measure.channels = channels
    signed = signed_activations(None if evidence.latency is None else evidence.latency.backend)

    def solve(mask: np.ndarray, limits: dict[str, float]) -> Allocation:
        return _solve_lazily(omega, mask, costs, limits, ties, tie_break, names, options, evidence)

    allocation = solve(disallowed, budgets)
    omega = _with_measurements(omega, names, options, evidence.measure)
    verified = None
    if evidence.measure is not None and spec.verify > 1:
        candidates = best_allocations(np.where(disallowed, np.inf, omega), {k: costs[k] for k in budgets},
                                      budgets, ties, spec.verify, tie_break, evidence.loss_resolution)
        allocation, verified = _verified(candidates, names, options, evidence.measure, tie_break,
                                         evidence.loss_resolution, signed)
    speed = None
    if evidence.plan_latency is not None and evidence.measure is not None and "latency_ms" not in spec.budgets:
        allowed = ~disallowed & np.isfinite(omega)
        allocation, speed = _fastest(solve, allocation, verified, names, options, width, allowed, spec, evidence,
                                     signed)
        omega = _with_measurements(omega, names, options, evidence.measure)
    plan = _plan(names, layers, options, curvature, spec, evidence, omega, costs, allocation, verified, sizes,
                 channels, omegas)
    return replace(plan, float_latency_ms=float_latency, loss_resolution=evidence.loss_resolution,
                   speed_checked=speed, act_signed=signed, pricing=pricing)


def _pricing(spec: PlanSpec, options: dict[str, list[LayerOption]], layers: dict[str, nn.Module],
             evidence: PlanEvidence) -> str:
    """``spec.pricing``, ``auto`` resolved: isolated without reconstructions in the evidence (apply's
    drift rule re-fits reconstructed layers only), else by its cost rule (``absorbed.auto_pricing``)."""
    if evidence.reconstruction is None:
        if spec.pricing == "absorbed":
            raise InputError("absorbed pricing needs the reconstructions apply deploys (evidence.reconstruction)")
        return "isolated"
    if spec.pricing != "auto":
        return spec.pricing
    return auto_pricing(options, max(layer.weight[0].numel() for layer in layers.values()))


def _absorbed_prices(pricing: str, options: dict[str, list[LayerOption]], curvature: Curvature,
                     evidence: PlanEvidence) -> AbsorbedPrices | None:
    """With absorbed pricing: every absorbable option re-fitted downstream (a progress bar; cached
    in the evidence's reconstructions) and the measured single-layer ΔL of those options the absorbed
    ΔL (``evidence.measure.absorbed``); else None, and the measured ΔL isolated."""
    measure = evidence.measure
    absorbed = None
    if pricing == "absorbed":
        from compress.progress import progress_bar

        absorbed = AbsorbedPrices(evidence.reconstruction, curvature, None if measure is None else measure.loss_change)
        wanted = [(name, option) for name, opts in options.items() for option in opts if absorbable(option)]
        with progress_bar("pricing options after the downstream drift re-fit", len(wanted)) as advance:
            for name, option in wanted:
                absorbed.refitted(name, option)
                advance(1)
    if measure is not None:
        measure.absorbed = absorbed
    return absorbed


def _solve_lazily(omega: np.ndarray, disallowed: np.ndarray, costs: dict[str, np.ndarray], budgets: dict[str, float],
                  ties: tuple[np.ndarray, ...], tie_break: np.ndarray | None, names: list[str],
                  options: dict[str, list[LayerOption]], evidence: PlanEvidence) -> Allocation:
    """The optimal allocation with max(Ω, measured ΔL) for every chosen option: solve, measure the
    chosen options not yet measured, solve again until every chosen option is measured."""
    while True:
        omega = _with_measurements(omega, names, options, evidence.measure)
        allocation = allocate(np.where(disallowed, np.inf, omega), {k: costs[k] for k in budgets},
                              budgets, ties, tie_break=tie_break, tie_tolerance=evidence.loss_resolution)
        chosen = [(name, options[name][column]) for name, column in zip(names, allocation.choices)]
        if evidence.measure is None or all(key in evidence.measure.cache for key in chosen):
            return allocation
        evidence.measure.measure_all(chosen)


def _fastest(solve, reference: Allocation, verified: list[dict] | None, names: list[str],
             options: dict[str, list[LayerOption]], width: int, allowed: np.ndarray, spec: PlanSpec,
             evidence: PlanEvidence, signed: bool) -> tuple[Allocation, list[dict]]:
    """``speed.fastest_plan`` over the activation patterns, each solved under the user's budgets
    only (whole-plan timing replaces the per-layer table's never-slower-than-float bound)."""
    from compress.plan.speed import act_patterns, act_units, fastest_plan, pattern_mask

    def plan_of(allocation: Allocation) -> dict[str, LayerOption]:
        return {name: options[name][column] for name, column in zip(names, allocation.choices)}

    def int8_of(allocation: Allocation) -> frozenset[str]:
        return frozenset(n for n, o in plan_of(allocation).items() if o.act_bits is not None)

    units = act_units(names, options, allowed, evidence.ties or [])
    measured = {tuple(row["choices"].values()): row["measured_delta_loss"] for row in verified or []}
    labels = tuple(o.label() for o in plan_of(reference).values())
    reference_loss = measured[labels] if labels in measured else evidence.measure.joint(plan_of(reference), signed)
    return fastest_plan(act_patterns(units, int8_of(reference)),
                        lambda int8: solve(~allowed | pattern_mask(names, options, width, units, int8), spec.budgets),
                        int8_of, plan_of, evidence.plan_latency, lambda a: evidence.measure.joint(plan_of(a), signed),
                        reference, reference_loss, evidence.loss_resolution)


def _with_float_latency_bound(budgets: dict[str, float], evidence: PlanEvidence,
                              names: list[str]) -> tuple[dict[str, float], float | None]:
    """The budgets the solver meets: the user's, plus Σ latency ≤ Σ FP32 latency when a latency
    table is given without a latency budget (a plan is never slower than float on its backend);
    and that Σ FP32 latency (None without a table)."""
    if evidence.latency is None:
        return dict(budgets), None
    float_latency = sum(evidence.latency.latency(name, LayerOption(None)) for name in names)
    if "latency_ms" in budgets:
        return dict(budgets), float_latency
    return {**budgets, "latency_ms": float_latency * (1 + 1e-9)}, float_latency  # equality holds despite rounding


def group_ties(channels: ChannelPlan, names: list[str], options: dict[str, list[LayerOption]], width: int,
               spec: PlanSpec) -> tuple[np.ndarray, ...]:
    """Equality tables making every member of a channel group choose the same pruned fraction of
    it: for each fraction s, [first member's option implies s] = [member's option implies s]."""
    tables = []
    for group in channels.groups:
        members = channels.members(group)
        for fraction in spec.channel_sparsities():
            indicator = _table_by_layer(options, names, width,
                                        lambda n, o: float(n in members and channels.group_sparsity(n, group, o) == fraction))
            index = {name: row for row, name in enumerate(names)}
            for other in members[1:]:
                table = np.zeros_like(indicator)
                table[index[members[0]]] = indicator[index[members[0]]]
                table[index[other]] = -indicator[index[other]]
                tables.append(table)
    return tuple(tables)


def _verified(candidates: list[Allocation], names: list[str], options: dict[str, list[LayerOption]],
              measure: SingleLayerLoss, latency: np.ndarray | None = None,
              resolution: float = 0.0, act_signed: bool = True) -> tuple[Allocation, list[dict]]:
    """The candidate whose whole-plan loss increase, measured on the calibration data, is least
    (with a ``latency`` table: the fastest of those within ``resolution`` of the least).

    Per-layer predictions add up; real damage need not (at 2.5 bits on mnist-cnn the 2-bit head
    dominates and extra bits elsewhere do not reduce the loss), so the few best allocations by
    ΣΩ are measured as wholes (applied as apply applies them) and the truly best is kept."""
    rows = []
    for allocation in candidates:
        chosen = {name: options[name][column] for name, column in zip(names, allocation.choices)}
        rows.append({"choices": {n: o.label() for n, o in chosen.items()},
                     "predicted_delta_loss": allocation.objective, "measured_delta_loss": measure.joint(chosen, act_signed)})
    best = min(range(len(rows)), key=lambda i: rows[i]["measured_delta_loss"])
    if latency is not None:
        speed = [float(latency[np.arange(len(names)), list(a.choices)].sum()) for a in candidates]
        least = rows[best]["measured_delta_loss"]
        near = [i for i in range(len(rows)) if rows[i]["measured_delta_loss"] <= least + resolution]
        best = min(near, key=lambda i: (speed[i], rows[i]["measured_delta_loss"]))
        for row, ms in zip(rows, speed):
            row["latency_ms"] = ms
    return candidates[best], rows


def _with_measurements(omega: np.ndarray, names: list[str], options: dict[str, list[LayerOption]],
                       measure: SingleLayerLoss | None) -> np.ndarray:
    """max(Ω, measured ΔL) wherever a measurement exists (excluded options stay inf)."""
    if measure is None:
        return omega
    result, measured = omega.copy(), measure.cache
    for row, name in enumerate(names):
        for column, option in enumerate(options[name]):
            if (name, option) in measured:
                result[row, column] = max(result[row, column], measured[(name, option)])
    return result


def cost_tables(model: nn.Module, layers: dict[str, nn.Module], options: dict[str, list[LayerOption]],
                evidence: PlanEvidence, width: int, sizes: SizeModel, folded: bool) -> dict[str, np.ndarray]:
    """Per (layer, option) contribution to every budget; the fixed bits of everything unplanned
    are spread evenly over the layers so size totals count them."""
    names = list(layers)
    counts = {n: layers[n].weight.numel() for n in names}
    planned = sum(counts.values())
    storage = _table_by_layer(options, names, width, lambda n, o: sizes.layer_bits(n, o, folded))
    tables = {
        "storage_bits": storage,
        "avg_bits": _table_by_layer(options, names, width, lambda n, o: effective_bits(o, sizes.kept_fraction(n, o))
                                    * counts[n] / planned),
        "size_mb": (storage + sizes.fixed_bits / len(names)) / 8e6,
    }
    if evidence.latency is not None:
        tables["latency_ms"] = _table_by_layer(options, names, width, evidence.latency.latency)
    if evidence.macs is not None:
        tables["gbops"] = _table_by_layer(options, names, width,
                                          lambda n, o: bops(evidence.macs[n], o, sizes.kept_fraction(n, o)) / 1e9)
    return tables


def _table_by_layer(options: dict[str, list[LayerOption]], names: list[str], width: int, value) -> np.ndarray:
    """table[l, o] = value(name of l, option o); columns past a layer's options stay 0."""
    table = np.zeros((len(names), width))
    for row, name in enumerate(names):
        for column, option in enumerate(options[name]):
            table[row, column] = value(name, option)
    return table


def _require_costs(spec: PlanSpec, evidence: PlanEvidence) -> None:
    if "gbops" in spec.budgets and evidence.macs is None:
        raise InputError("a gbops budget needs the layers' MACs; they are measured on the calibration data")
    if "latency_ms" in spec.budgets and evidence.latency is None:
        raise InputError("a latency_ms budget needs a per-layer latency cost table (evidence.latency), "
                         "e.g. from compress.backends.ort.latency_table")


def _plan(names, layers, options, curvature, spec, evidence, omega, costs, allocation, verified, sizes,
          channels, omegas) -> Plan:
    rows = np.arange(len(names))
    columns = list(allocation.choices)
    chosen = {name: options[name][column] for name, column in zip(names, columns)}
    plan_layers = {}
    for row, (name, column) in enumerate(zip(names, columns)):
        option, info = chosen[name], curvature.layers[name]
        plan_layers[name] = LayerPlan(
            weight_bits=option.bits, sparsity=option.sparsity, pattern=option.pattern, act_bits=option.act_bits,
            input_sparsity=option.input_sparsity, trace=info.trace, trace_stderr=info.trace_stderr,
            trace_converged=converged(info.trace, info.trace_stderr),
            num_weights=layers[name].weight.numel(), predicted_delta_loss=float(omega[row, column]),
            storage_bits=float(costs["storage_bits"][row, column]),
            sparsity_limit=None if evidence.sparsity_limits is None else evidence.sparsity_limits[name],
            latency_ms=float(costs["latency_ms"][row, column]) if "latency_ms" in costs else None,
            considered={o.label(): float(omega[row, i]) for i, o in enumerate(options[name])},
            omega_first_order=omegas[(name, option)][0], omega_reconstructed=omegas[(name, option)][1],
            omega_absorbed=omegas[(name, option)][2],
            rank=option.rank,
        )
    totals = {key: float(table[rows, columns].sum()) for key, table in costs.items() if key != "storage_bits"}
    totals["size_mb"] = sizes.total_bits(chosen) / 8e6  # exact: BN folding follows the chosen options
    totals["onnx_graph_mb"] = sizes.graph_bytes(chosen) / 1e6  # predicted: what an ONNX file adds to size_mb
    return Plan(plan_layers, dict(spec.budgets), totals, allocation.objective, tied_groups=evidence.ties,
                loss_tolerance=evidence.loss_tolerance, model_sparsity_limit=evidence.model_sparsity_limit,
                measured_options=0 if evidence.measure is None else len(evidence.measure.cache),
                verified=verified, channel_groups={g: channels.members(g) for g in channels.groups},
                unconverged=[n for n, layer in plan_layers.items() if not layer.trace_converged])


def parse_budget(text: str) -> tuple[str, float]:
    """``avg_bits=4`` -> ("avg_bits", 4.0), with a one-line error for anything else."""
    key, sep, value = text.partition("=")
    if not sep or key not in BUDGETS:
        raise InputError(f"bad budget {text!r}; write NAME=VALUE with NAME one of {', '.join(BUDGETS)}")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"bad budget {text!r}: {value!r} is not a number") from None
    if number <= 0:
        raise InputError(f"bad budget {text!r}: it must be positive")
    return key, number
