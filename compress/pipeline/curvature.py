"""Curvature of a model on data: the first ``max_samples`` of the calibration split."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from compress.curvature.estimate import CurvatureSpec
    from compress.curvature.result import Curvature
    from compress.data.source import DataSource

MAX_SAMPLES = 1024  # the calibration samples a curvature figure uses unless told otherwise


def measure_curvature(model: "str | nn.Module", data: Any, spec: "CurvatureSpec | None" = None,
                      max_samples: int | None = MAX_SAMPLES, weights: str | None = None,
                      split: str | None = None) -> tuple["nn.Module", "DataSource", "Curvature"]:
    """(model, calibration data, Curvature): the model and data resolved as users give them."""
    from compress.curvature.estimate import CurvatureSpec, estimate_curvature
    from compress.pipeline.inputs import data_source, first_samples, resolve_model

    from compress.pipeline.checks import check_inputs

    module, name = resolve_model(model, weights)
    source = first_samples(data_source(data, "train", module, split), max_samples)
    check_inputs(module, name, source)
    return module, source, estimate_curvature(module, source, spec or CurvatureSpec())
