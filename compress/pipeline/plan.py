"""Plan → recipe: measure what the planner needs from the data given (curvature unless given,
single-layer ΔL, sparsity limits, MACs, residual ties, the latency table for a backend), solve,
and turn the plan into a validated ``Recipe`` (optionally with a fine-tuning section).

The defaults are the CLI's: hybrid sensitivity (measured single-layer ΔL), verification of the 8
least-Ω allocations (1 where a layer is wider than 2,048 inputs: ``with_default_verify``),
Gauss-Newton traces (``plan_curvature_spec``), the first 1,024 calibration samples; with a backend
whose fast kernels are integer ones (``ort-cpu``: QLinearConv / QGemm need int8 activations), int8
activations are candidates by default (``act_bits`` 8 and float), since weight-only layers run there
at float speed (the exporter's fold form) and only shrink the file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from compress.curvature.estimate import CurvatureSpec
    from compress.curvature.result import Curvature
    from compress.data.source import DataSource
    from compress.plan.make import Plan, PlanEvidence, PlanSpec
    from compress.recipe.schema import Recipe

VERIFY = 8
VERIFY_MAX_INPUTS = 2048  # inputs per output of the widest layer up to which whole plans are verified
PLAN_TRACE_METHOD = "gauss-newton"  # PSD per-layer traces, no cross-layer noise (plan_curvature_spec)
PLAN_REL_ERROR = 0.2  # 95% half-width the plan's traces need: one bit changes Ω ~4×, ±20% cannot
PLAN_MAX_PROBES = 64  # Gauss-Newton probes meet it in 8–16 (ResNet-18 on 300 digits: 8); the cap, not a clock
SENSITIVITIES = ("hybrid", "trace")
BACKENDS = ("ort-cpu",)
INTEGER_BACKENDS = ("ort-cpu",)  # backends whose speed-ups need 8-bit activations


@dataclass(frozen=True)
class PlanMeasurements:
    """How the planner measures: sensitivity (``hybrid``: max of the trace Ω and the measured
    single-layer ΔL; ``trace``: Ω only), the latency backend for ``latency_ms`` budgets, and the
    batch size / thread count its per-layer table times; ``deploy_batch``: with hybrid sensitivity
    and no latency budget, whole candidate plans are timed on the backend at batch 1 and this batch
    (``compress.plan.speed``) and the fastest as good as the best is chosen."""

    sensitivity: str = "hybrid"
    backend: str | None = None
    latency_batch: int = 1
    threads: int = 1
    batch_size: int = 128
    deploy_batch: int = 32

    def __post_init__(self) -> None:
        if self.sensitivity not in SENSITIVITIES:
            raise InputError(f"sensitivity {self.sensitivity!r}: choose {' or '.join(SENSITIVITIES)}")
        if self.backend not in (None, *BACKENDS):
            raise InputError(f"backend {self.backend!r}: choose {', '.join(BACKENDS)} or None")
        if min(self.latency_batch, self.threads, self.batch_size, self.deploy_batch) < 1:
            raise InputError("latency_batch, threads, batch_size and deploy_batch must be at least 1")


def plan_spec(budgets: dict[str, float], measurements: PlanMeasurements | None = None, **fields: Any) -> "PlanSpec":
    """A ``PlanSpec`` with the CLI's defaults (verify the 8 least-Ω allocations; ``act_bits``
    from ``default_act_bits`` unless given)."""
    from compress.plan.make import PlanSpec

    how = measurements or PlanMeasurements()
    defaults = {"verify": VERIFY, "act_bits": default_act_bits(how.backend, how.sensitivity)}
    return PlanSpec(budgets=dict(budgets), **{**defaults, **fields})


def with_default_verify(spec: "PlanSpec", model: "nn.Module") -> "PlanSpec":
    """``spec`` verifying ``VERIFY`` allocations where a whole-plan application is cheap, else 1.

    Each verified allocation is applied as apply applies it: true-sequential reconstruction, one
    statistics pass and one d×d inverse-Hessian factor per layer (d inputs per output), O(d³). Up to
    ``VERIFY_MAX_INPUTS`` inputs (builtin:mnist-cnn, MiniLM's 1,536) that is cheap; ResNet-18's
    layer4 convs have 4,608, where one application repeats the statistics pass and a factor per
    layer, the bulk of the plan's own pricing (``benchmarks/README.md``, ResNet-18: 119 s and
    434 s under load), so there only the least-ΣΩ allocation is kept (its options still measured
    one layer at a time, as always with hybrid sensitivity); ``verify`` set explicitly overrides
    this."""
    from compress.plan.make import plannable_layers

    largest = max((layer.weight[0].numel() for layer in plannable_layers(model).values()), default=0)
    return replace(spec, verify=VERIFY if largest <= VERIFY_MAX_INPUTS else 1)


def default_act_bits(backend: str | None, sensitivity: str) -> tuple[int | None, ...]:
    """(8, None) for a backend in ``INTEGER_BACKENDS`` when single-layer ΔL is measured (activation
    options are priced by measurement only); (None,) — weights only — otherwise."""
    return (8, None) if backend in INTEGER_BACKENDS and sensitivity == "hybrid" else (None,)


def default_curvature_spec(batch_size: int = 128) -> "CurvatureSpec":
    """The planner's curvature: Gauss-Newton traces to ±``PLAN_REL_ERROR`` at 95% (floor 1% of the
    total), up to ``PLAN_MAX_PROBES`` probes, no clock."""
    from compress.curvature.estimate import CurvatureSpec
    from compress.curvature.trace import TraceSpec

    return CurvatureSpec(batch_size=batch_size, method=PLAN_TRACE_METHOD,
                         trace=TraceSpec(rel_error=PLAN_REL_ERROR, max_products=PLAN_MAX_PROBES))


def plan_curvature_spec(curvature_spec: "CurvatureSpec | None", spec: "PlanSpec | None") -> "CurvatureSpec":
    """What the planner asks of the curvature stage, over all of its calibration data.

    Sensitivity must never reward noise, so ``method="auto"`` means Gauss-Newton traces for every
    loss: tr(G_ii) = E‖(Jᵀu)_i‖² is a sum of squares, ≥ 0 in every probe (positive semi-definite
    by construction), with no cross-layer noise, and it meets the plan's ±``PLAN_REL_ERROR`` in
    8–16 probes whatever the model's size (ResNet-18's worst layer after 8: ±15% of the floor), so
    a probe budget, each probe one backward pass over the data, scales the time with the model.
    For ReLU / max-pool / eval-mode-BN nets each layer's output is piecewise linear in that
    layer's weights, so its Hessian block *is* its Gauss-Newton block (DESIGN §7);
    for smooth nets G_ii is the positive semi-definite part HAWQ's trace stands for. An explicit
    ``method`` is kept (a Hutchinson trace is then used through ``safe_trace``).

    Lanczos runs (the spectral density) only where the plan uses them: the whole-model sparsity
    limit of a plan that may prune (``spec.prunes()``); otherwise ``slq_runs`` is 0 (on ResNet-18:
    60 Hessian products, each dearer than a probe, against the traces' 8 probes)."""
    chosen = curvature_spec or default_curvature_spec()
    method = PLAN_TRACE_METHOD if chosen.method == "auto" else chosen.method
    slq_runs = chosen.slq_runs if spec is None or spec.prunes() else 0
    return replace(chosen, method=method, slq_runs=slq_runs, max_samples=None)  # over all of the plan's data


def plan_inputs(model: "str | nn.Module", data: Any, curvature: "Curvature | None" = None,
                curvature_spec: "CurvatureSpec | None" = None, max_samples: int | None = 1024,
                weights: str | None = None, split: str | None = None, spec: "PlanSpec | None" = None,
                task: str | None = None, seq_len: int | None = None) -> tuple["nn.Module", "DataSource", "Curvature"]:
    """The model, its calibration data and its curvature (measured unless given); ``spec``'s
    overrides are checked against the model's layers first, before the expensive part. ``task``
    / ``seq_len``: an ``hf:`` model's head and the tokens per block of its causal-LM text data."""
    from compress.curvature.estimate import estimate_curvature
    from compress.pipeline.inputs import data_source, first_samples, resolve_model

    from compress.pipeline.checks import check_inputs

    module, name = resolve_model(model, weights, task)
    if spec is not None:
        from compress.plan.make import layer_options
        from compress.plan.overrides import restrict_options

        restrict_options(layer_options(module, spec), spec.overrides)
    source = first_samples(data_source(data, "train", module, split, seq_len), max_samples)
    check_inputs(module, name, source)
    if curvature is None:
        curvature = estimate_curvature(module, source, plan_curvature_spec(curvature_spec, spec))
    return module, source, curvature


def gather(model: "nn.Module", data: "DataSource", curvature: "Curvature", spec: "PlanSpec",
           how: PlanMeasurements = PlanMeasurements()) -> "PlanEvidence":
    """Everything the planner measures besides the curvature, with the latency table if a backend
    is named (and, with measured sensitivities, the backend's whole-plan timing)."""
    from compress.plan.evidence import gather_evidence

    evidence = gather_evidence(model, data, curvature, how.sensitivity == "hybrid", how.batch_size)
    if how.backend is None:
        return evidence
    from compress.backends.ort.latency_table import latency_table
    from compress.plan.make import layer_options

    first = next(iter(data.batches(1)))
    table = latency_table(model, first.inputs, layer_options(model, spec), how.latency_batch, how.threads)
    evidence = replace(evidence, latency=table.costs())
    if evidence.measure is None:
        return evidence
    from compress.backends.ort.plan_latency import OrtPlanLatency

    whole = OrtPlanLatency(model, data, (1, how.deploy_batch), how.threads, loss=curvature.loss)
    return replace(evidence, plan_latency=whole)


def solve(model: "nn.Module", curvature: "Curvature", spec: "PlanSpec", evidence: "PlanEvidence") -> "Plan":
    """One plan under ``spec.budgets`` (``latency_ms`` needs evidence with a latency table)."""
    from compress.plan.make import make_plan

    return make_plan(model, curvature, spec, evidence)


def sweep_plans(model: "nn.Module", curvature: "Curvature", spec: "PlanSpec", evidence: "PlanEvidence",
                budget: str, values: "np.ndarray"):
    """The Pareto frontier of predicted Δloss over ``values`` of one budget (others kept); points
    are not timed as whole plans (that search is per plan, ``compress.plan.speed``)."""
    from compress.plan.frontier import sweep
    from compress.plan.make import make_plan

    evidence = replace(evidence, plan_latency=None)

    return sweep(lambda v: make_plan(model, curvature, replace(spec, budgets={**spec.budgets, budget: v}), evidence),
                 budget, values)



def plan_as_recipe(plan: "Plan", model: str, data: str, weights: str | None = None,
                   finetune: dict | None = None, task: str | None = None, seq_len: int | None = None) -> "Recipe":
    """The plan as a validated recipe naming ``model`` and ``data`` (spec strings; ``task`` and
    ``seq_len`` of an ``hf:`` model and its text data when given), with an optional
    ``finetune`` section (FinetuneSpec fields)."""
    from compress.plan.recipe import plan_recipe
    from compress.recipe.schema import parse_recipe

    payload = plan_recipe(plan, model, data, weights)
    if task is not None:
        payload["model"]["task"] = task
    if seq_len is not None:
        payload["data"]["seq_len"] = seq_len
    if finetune is not None:
        payload["finetune"] = dict(finetune)
    return parse_recipe(payload, "the plan")


def save_recipe(recipe: "Recipe", path: str | Path, header: str = "", force: bool = False) -> Path:
    """Write the recipe YAML (what ``compress plan`` writes); never replaces a file unless ``force``."""
    from compress.plan.recipe import write_recipe

    write_recipe(recipe.to_dict(), Path(path), header, force)
    return Path(path)
