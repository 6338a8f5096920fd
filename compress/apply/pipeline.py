"""``apply_(model, spec, data) -> ApplyOutcome``: prune, quantize, recover, in that order.

1. Channel pruning first: it changes shapes, so everything after sees the narrow model.
2. Quantization (BatchNorms folded, fake-quant layers swapped in, activations calibrated on the
   calibration data).
3. Unstructured / 2:4 masks on the (folded, quantized) weights, so the magnitudes ranked are the
   ones deployed; the masks persist through fine-tuning.
4. Fine-tuning (QAT / KD / both) against the uncompressed teacher, checkpointed and resumable.
5. Masks baked into plain weights, records re-read (LSQ scales may have moved).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from compress.data.source import DataSource
from compress.finetune.spec import FinetuneResult, FinetuneSpec
from compress.prune.records import PruneRecords, PruneSettings
from compress.quant.records import QuantRecords, QuantSettings


@dataclass(frozen=True)
class ApplySpec:
    quantization: dict[str, QuantSettings] = field(default_factory=dict)  # by layer name
    pruning: dict[str, PruneSettings] = field(default_factory=dict)
    finetune: FinetuneSpec | None = None
    saliency_curvature: str = "fisher"  # diagonal behind ``obs`` pruning: fisher | ggn | hutchinson
    loss: str = "ce"  # for saliency: ce with labels, distill without


@dataclass(frozen=True)
class ApplyOutcome:
    quant: QuantRecords | None
    prune: PruneRecords | None
    finetune: FinetuneResult | None


def apply_(model: nn.Module, spec: ApplySpec, calibration: DataSource, train: DataSource | None,
           checkpoint_dir: Path | None = None, batch_size: int = 128) -> ApplyOutcome:
    """In place; ``train`` is needed when ``spec.finetune`` is set."""
    from compress.prune.apply import prune_model_
    from compress.prune.persist import remove_masks_
    from compress.quant.quantize import quantize_model_, records_of

    teacher = copy.deepcopy(model).eval()
    channel = {n: s for n, s in spec.pruning.items() if s.pattern == "channel"}
    masked = {n: s for n, s in spec.pruning.items() if s.pattern != "channel"}
    groups = prune_model_(model, channel, _saliency(model, channel, spec, calibration)) if channel else None
    quant = None
    if spec.quantization:
        quant = quantize_model_(model, spec.quantization, (b.inputs for b in calibration.batches(batch_size)))
    masks = prune_model_(model, masked, _saliency(model, masked, spec, calibration)) if masked else None
    result = None
    if spec.finetune is not None:
        result = _finetune(model, teacher, train, spec.finetune, checkpoint_dir)
    remove_masks_(model)
    if quant is not None:
        quant = records_of(model.eval(), quant.folded)
    return ApplyOutcome(quant, _merged(groups, masks), result)


def _merged(groups: PruneRecords | None, masks: PruneRecords | None) -> PruneRecords | None:
    """One record of both pruning passes (channels, then masks)."""
    if groups is None and masks is None:
        return None
    return PruneRecords(masks.masks if masks else {}, groups.groups if groups else {})


def _saliency(model: nn.Module, settings: dict[str, PruneSettings], spec: ApplySpec, data: DataSource):
    """Second-order saliency for the layers pruned by the ``obs`` criterion (None if none are)."""
    if not any(s.criterion == "obs" for s in settings.values()):
        return None
    from compress.prune.saliency import estimate_saliency

    return estimate_saliency(model, data, spec.loss, spec.saliency_curvature)


def _finetune(model: nn.Module, teacher: nn.Module, train: DataSource | None, spec: FinetuneSpec,
              checkpoint_dir: Path | None) -> FinetuneResult:
    from compress.errors import InputError
    from compress.finetune.train import finetune_

    if train is None:
        raise InputError("fine-tuning needs training data: set data.train in the recipe")
    return finetune_(model, teacher if spec.uses_teacher else None, train, spec, checkpoint_dir)
