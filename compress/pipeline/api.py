"""One call per stage for Python users (``import compress as cx``; the feel of torchao's
``quantize_(model, config)`` and ModelOpt's ``quantize(model, cfg, forward_loop)``).

Models may be spec strings, checkpoint directories or ``nn.Module``s; data may be spec strings,
``(inputs, targets)`` tensors, a ``Dataset``, a ``DataLoader``, a ``DataSource`` or a forward-loop
callable ``loop(model)`` (calibration only: no labels). Results chain in memory and save to the
files the CLI writes (``to_dict`` + ``compress.jsonio.write_json``, ``save_recipe``,
``save_checkpoint``).

    import compress as cx
    model = cx.load_model("builtin:mnist-cnn")
    curvature = cx.estimate_curvature(model, "builtin:mnist5k")
    plan = cx.make_plan(model, "builtin:mnist5k", budgets={"avg_bits": 4}, curvature=curvature)
    applied = cx.apply_plan_(model, plan, "builtin:mnist5k")
    artifact = cx.export_model(model, "out/model.onnx", "builtin:mnist5k")
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from compress.curvature.estimate import CurvatureSpec
    from compress.curvature.result import Curvature
    from compress.data.source import DataSource
    from compress.evaluation import EvalResult
    from compress.finetune.spec import FinetuneResult, FinetuneSpec
    from compress.pipeline.apply import Applied
    from compress.pipeline.export import ExportArtifact
    from compress.pipeline.plan import PlanMeasurements
    from compress.pipeline.report import Report
    from compress.plan.make import Plan, PlanSpec
    from compress.recipe.schema import Recipe

UNNAMED_MODEL = "<module>"  # the recipe's model spec when the user handed over a module


def load_model(model: "str | nn.Module", weights: str | None = None, task: str | None = None) -> "nn.Module":
    """A checkpoint directory, a float model spec (with an optional state_dict file; ``task``: the
    head of an ``hf:`` model) or a module."""
    from compress.pipeline.inputs import resolve_model

    return resolve_model(model, weights, task)[0]


def as_data(data: Any, split: str | None = None, role: str = "train", model: "nn.Module | None" = None,
            seq_len: int | None = None) -> "DataSource":
    """Data as the verbs read it (``model`` is needed for a forward-loop callable and for a text
    file, tokenised for that ``hf:`` model in blocks of ``seq_len`` tokens for a causal LM)."""
    from compress.data.adapt import as_data as adapt

    return adapt(data, split, role, model, seq_len=seq_len)


def estimate_curvature(model: "str | nn.Module", data: Any, spec: "CurvatureSpec | None" = None) -> "Curvature":
    """Per-layer Hessian traces ± error (probe and data parts), top eigenvalues and spectral density
    over all of ``data`` unless ``spec.max_samples`` asks for a random subset (the CLI's defaults)."""
    from compress.pipeline.curvature import measure_curvature

    return measure_curvature(model, data, spec)[2]


def make_plan(model: "str | nn.Module", data: Any, budgets: dict[str, float] | None = None,
              spec: "PlanSpec | None" = None, curvature: "Curvature | None" = None,
              measurements: "PlanMeasurements | None" = None, max_samples: int | None = 1024) -> "Plan":
    """The optimal per-layer options under the budgets. Measures from ``data`` what the CLI does:
    the curvature (unless given), single-layer ΔL, whole-plan verification (``with_default_verify``) of the 8 best
    allocations, sparsity limits, MACs, residual ties, and the latency table for a backend."""
    from compress.pipeline.plan import PlanMeasurements, gather, plan_inputs, plan_spec, solve, with_default_verify

    if (budgets is None) == (spec is None):
        raise InputError("give budgets (e.g. {'avg_bits': 4}) or a PlanSpec, not both")
    given = spec
    spec = spec if spec is not None else plan_spec(budgets, measurements)
    module, source, curvature = plan_inputs(model, data, curvature, None, max_samples, spec=spec)
    spec = spec if given is not None else with_default_verify(spec, module)
    evidence = gather(module, source, curvature, spec, measurements or PlanMeasurements())
    return solve(module, curvature, spec, evidence)


def apply_plan_(model: "str | nn.Module", plan: "Plan | Recipe", data: Any, train: Any = None,
                eval_data: Any = None, finetune: "FinetuneSpec | dict | None" = None,
                calibration_samples: int = 512, batch_size: int = 128,
                checkpoint_dir: str | Path | None = None) -> "Applied":
    """In place: prune, quantize (calibrated on the first ``calibration_samples`` of ``data``) and,
    with ``finetune`` (or the recipe's section), recover on ``train`` (default ``data``); evaluated
    before and after on ``eval_data`` (default: ``data``'s held-out split / ``data``)."""
    from dataclasses import asdict, replace

    from compress.pipeline.apply import apply_recipe_, as_recipe
    from compress.pipeline.inputs import data_source, first_samples, resolve_model

    from compress.pipeline.inputs import loaded_from

    module, name = resolve_model(model)
    spec = model if isinstance(model, str) else loaded_from(model) or UNNAMED_MODEL
    recipe = as_recipe(plan, spec, data if isinstance(data, str) else "<data>")
    if finetune is not None:
        section = asdict(finetune) if not isinstance(finetune, dict) else dict(finetune)
        recipe = replace(recipe, finetune=section)
    calibration = first_samples(data_source(data, "train", module), calibration_samples)
    train_data = data_source(train if train is not None else data, "train", module) if recipe.finetune else None
    heldout = data_source(eval_data if eval_data is not None else data, "heldout", module)
    return apply_recipe_(module, recipe, calibration, train_data, heldout,
                         None if checkpoint_dir is None else Path(checkpoint_dir), batch_size, name)


def finetune_(model: "nn.Module", data: Any, spec: "FinetuneSpec | dict | None" = None,
              teacher: "nn.Module | None" = None, checkpoint_dir: str | Path | None = None) -> "FinetuneResult":
    """QAT / KD / both on ``data`` (train split of builtins), in place; ``teacher`` for KD."""
    from compress.finetune.spec import FinetuneSpec
    from compress.finetune.train import finetune_ as run
    from compress.pipeline.inputs import data_source

    spec = spec if isinstance(spec, FinetuneSpec) else FinetuneSpec(**(spec or {}))
    if spec.uses_teacher and teacher is None:
        raise InputError(f"finetune mode {spec.mode!r} distils from a teacher; pass teacher= (the uncompressed model)")
    return run(model, teacher if spec.uses_teacher else None, data_source(data, "train", model), spec,
               None if checkpoint_dir is None else Path(checkpoint_dir))


def export_model(model: "str | nn.Module", out: str | Path, data: Any, target: str = "ort",
                 force: bool = False) -> "ExportArtifact":
    """ONNX with explicit Q/DQ at ``out`` (a ``.onnx`` path, or a directory for ``model.onnx``),
    checked for ``target`` (ort: fusion report; tensorrt: rule check and engine), with parity on
    ``data`` (held-out split of builtins)."""
    from compress.pipeline.export import export_model as export
    from compress.pipeline.inputs import data_source, resolve_model

    module, _ = resolve_model(model)
    path = Path(out) if str(out).endswith(".onnx") else Path(out) / "model.onnx"
    return export(module, data_source(data, "heldout", module), path, target, force)


def save_checkpoint(model: "nn.Module", applied: "Applied", out: str | Path, model_spec: str | None = None) -> Path:
    """The checkpoint directory ``compress apply`` writes (reloads with ``load_model(out)``).
    A model handed over as a module needs ``model_spec``: the spec that rebuilds its float
    architecture (e.g. ``"file.py:factory"``)."""
    from dataclasses import replace

    from compress.checkpoint.format import save_checkpoint as save

    info = applied.checkpoint_info()
    spec = model_spec or info.model_spec
    if spec == UNNAMED_MODEL:
        raise InputError("the model was handed over as a module: give model_spec (e.g. 'file.py:factory') "
                         "so that load_model can rebuild its architecture")
    save(model, replace(info, model_spec=spec), Path(out))
    return Path(out)


def evaluate(model: "str | nn.Module", data: Any, reference: "str | nn.Module | None" = None,
             batch_size: int = 256) -> "EvalResult":
    """Accuracy with labels, else mean cosine to ``reference`` (a checkpoint's default: its
    uncompressed model); held-out split of builtin data."""
    from compress.pipeline.evaluate import evaluate_model

    return evaluate_model(model, data, reference, batch_size)


def build_report(out_dir: str | Path, model: str | None = None, curvature: Any = None, plan: Any = None,
                 evals: dict[str, Any] | None = None, latency: Any = None, finetune: Any = None,
                 parity: dict[str, Any] | None = None, force: bool = False) -> "Report":
    """report.json / report.md / report.html from results in memory (or their dicts); ``plan``
    is the plan's Recipe (``plan_as_recipe``)."""
    from compress.pipeline.report import report_from_results

    return report_from_results(out_dir, model, curvature, plan, evals, latency, finetune, parity, None, force)
