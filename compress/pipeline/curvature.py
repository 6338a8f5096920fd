"""Curvature of a model on data: all of the calibration split unless ``spec.max_samples`` asks for a
random subset (whose data part of the error is then in the ± the result reports)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from compress.curvature.estimate import CurvatureSpec
    from compress.curvature.result import Curvature
    from compress.data.source import DataSource

def measure_curvature(model: "str | nn.Module", data: Any, spec: "CurvatureSpec | None" = None,
                      weights: str | None = None, split: str | None = None, task: str | None = None,
                      seq_len: int | None = None) -> tuple["nn.Module", "DataSource", "Curvature"]:
    """(model, calibration data, Curvature): the model and data resolved as users give them
    (``task`` / ``seq_len``: an ``hf:`` model's head and its causal-LM text blocks)."""
    from compress.curvature.estimate import CurvatureSpec, estimate_curvature
    from compress.pipeline.checks import check_inputs
    from compress.pipeline.inputs import data_source, resolve_model

    module, name = resolve_model(model, weights, task)
    source = data_source(data, "train", module, split, seq_len)
    check_inputs(module, name, source)
    return module, source, estimate_curvature(module, source, spec or CurvatureSpec())
