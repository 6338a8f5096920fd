"""Everything the planner measures besides the curvature, gathered in one place for the CLI:
single-layer loss changes, sparsity limits at the loss tolerance, MACs, residual ties, and the
reconstructions apply will deploy (layer statistics from the same calibration data)."""

from __future__ import annotations

from torch import nn

from compress.curvature.result import Curvature
from compress.data.source import DataSource
from compress.plan.limits import layer_limits, loss_tolerance, model_limit
from compress.plan.macs import layer_macs
from compress.plan.make import PlanEvidence, plannable_layers
from compress.plan.measured import SingleLayerLoss
from compress.plan.reconstructed import Reconstructions
from compress.plan.ties import residual_groups


def gather_evidence(model: nn.Module, data: DataSource, curvature: Curvature, measure_layers: bool,
                    batch_size: int) -> PlanEvidence:
    names = list(plannable_layers(model))
    epsilon = _defined_tolerance(model, data, curvature.loss, batch_size)
    first = next(iter(data.batches(batch_size)))
    batches = list(data.batches(batch_size))
    reconstruction = Reconstructions(model, batches)
    return PlanEvidence(
        measure=SingleLayerLoss(model, data, curvature.loss, batch_size, reconstruction) if measure_layers else None,
        sparsity_limits=None if epsilon is None else layer_limits(model, curvature, names, epsilon),
        loss_tolerance=epsilon,
        model_sparsity_limit=None if epsilon is None else model_limit(model, curvature, epsilon),
        macs=layer_macs(model, first.inputs, names),
        ties=residual_groups(model, names),
        reconstruction=reconstruction,
        loss_resolution=0.0 if epsilon is None else epsilon / len(batches) ** 0.5,
    )


def _defined_tolerance(model: nn.Module, data: DataSource, loss: str, batch_size: int) -> float | None:
    """ε, or None where the limits are undefined: one batch only (no batch-to-batch spread), or
    ε = 0 (self-distillation starts at zero loss on every batch)."""
    try:
        return loss_tolerance(model, data, loss, batch_size) or None
    except ValueError:
        return None
