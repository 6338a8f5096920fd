"""compress: curvature-driven model compression for PyTorch.

``import compress as cx`` is a lazy façade (PEP 562): the verbs and their config/result types are
imported on first use, so importing this package imports nothing heavy (no torch, onnxruntime,
transformers, torchvision or tensorrt).

    cx.load_model, cx.as_data, cx.estimate_curvature, cx.make_plan, cx.apply_plan_, cx.finetune_,
    cx.export_model, cx.save_checkpoint, cx.evaluate, cx.build_report
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # verbs (compress/pipeline/api.py)
    **{name: "compress.pipeline.api" for name in (
        "load_model", "as_data", "estimate_curvature", "make_plan", "apply_plan_", "finetune_", "export_model",
        "save_checkpoint", "evaluate", "build_report")},
    "plan_spec": "compress.pipeline.plan",
    "plan_as_recipe": "compress.pipeline.plan",
    "save_recipe": "compress.pipeline.plan",
    # config types
    "CurvatureSpec": "compress.curvature.estimate",
    "TraceSpec": "compress.curvature.trace",
    "PlanSpec": "compress.plan.make",
    "PlanMeasurements": "compress.pipeline.plan",
    "FinetuneSpec": "compress.finetune.spec",
    "Recipe": "compress.recipe.schema",
    "load_recipe": "compress.recipe.schema",
    # result types
    "Curvature": "compress.curvature.result",
    "Plan": "compress.plan.make",
    "Applied": "compress.pipeline.apply",
    "FinetuneResult": "compress.finetune.spec",
    "ExportArtifact": "compress.pipeline.export",
    "EvalResult": "compress.evaluation",
    "Report": "compress.pipeline.report",
    "DataSource": "compress.data.source",
    # errors
    **{name: "compress.errors" for name in (
        "CompressError", "InputError", "ConfigError", "BudgetError", "MissingDependencyError")},
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'compress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
