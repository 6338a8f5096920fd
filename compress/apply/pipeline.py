"""``apply_(model, spec, data) -> ApplyOutcome``: prune, factorise, reconstruct, quantize, recover, in that order.

1. Channel pruning first: it changes shapes, so everything after sees the narrow model.
1b. Low-rank factorisation (``compress.lowrank``) of the (narrowed) layers, from their input
   statistics on the calibration data (and the output Fisher diagonal for the Fisher methods; with
   ``input_drift``, true-sequentially toward the float model's outputs): a
   layer ``X`` becomes ``X.0``, ``X.1``, and the quantization settings given for ``X`` apply to both
   factors from here on (masks on a factorised layer are refused).
2. BatchNorms folded (when quantizing), then second-order reconstruction (``compress.reconstruct``)
   of every layer quantized with ``method: gptq`` or pruned by ``wanda`` / ``sparsegpt``, true-
   sequentially on the calibration data: GPTQ weights and SparseGPT masks, written in place.
3. Quantization (fake-quant layers swapped in, reconstructed layers holding the reconstruction's
   scales fixed, activations calibrated on the calibration data).
4. Unstructured / 2:4 masks: the reconstruction's where it chose them, else ranked on the (folded,
   quantized) weights, so the magnitudes ranked are the ones deployed; the masks persist through
   fine-tuning.
5. Fine-tuning (QAT / KD / both) against the uncompressed teacher, checkpointed and resumable,
   starting from the reconstructed weights.
6. Masks baked into plain weights, records re-read (LSQ scales may have moved).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from compress.data.source import DataSource
from compress.errors import ConfigError
from compress.finetune.spec import FinetuneResult, FinetuneSpec
from compress.lowrank.records import LowRankRecords
from compress.lowrank.settings import LowRankSettings
from compress.prune.records import MaskRecord, PruneRecords, PruneSettings
from compress.quant.records import QuantRecords, QuantSettings
from compress.reconstruct.sequential import ReconstructReport


@dataclass(frozen=True)
class ApplySpec:
    quantization: dict[str, QuantSettings] = field(default_factory=dict)  # by layer name
    pruning: dict[str, PruneSettings] = field(default_factory=dict)
    finetune: FinetuneSpec | None = None
    saliency_curvature: str = "fisher"  # diagonal behind ``obs`` pruning: fisher | ggn | hutchinson
    loss: str = "ce"  # for saliency and loss-aware reconstruction: ce with labels, distill without
    sequential: bool = True  # reconstruct each layer from the already-compressed earlier layers' outputs
    lowrank: dict[str, LowRankSettings] = field(default_factory=dict)  # by (unfactorised) layer name


@dataclass(frozen=True)
class ApplyOutcome:
    quant: QuantRecords | None
    prune: PruneRecords | None
    finetune: FinetuneResult | None
    reconstruction: ReconstructReport | None = None
    lowrank: LowRankRecords | None = None


def apply_(model: nn.Module, spec: ApplySpec, calibration: DataSource, train: DataSource | None,
           checkpoint_dir: Path | None = None, batch_size: int = 128) -> ApplyOutcome:
    """In place; ``train`` is needed when ``spec.finetune`` is set."""
    from compress.prune.apply import prune_model_
    from compress.prune.persist import remove_masks_
    from compress.quant.bn_fold import fold_batchnorm_
    from compress.quant.quantize import quantize_model_, records_of

    teacher = copy.deepcopy(model).eval()
    channel = {n: s for n, s in spec.pruning.items() if s.pattern == "channel"}
    groups = prune_model_(model, channel, _saliency(model, channel, spec, calibration)) if channel else None
    lowrank = _factorise(model, spec.lowrank, calibration, batch_size) if spec.lowrank else None
    spec = on_factors(spec, lowrank)
    folded = fold_batchnorm_(model.eval()) if spec.quantization else []
    reconstructed, report = _reconstruct(model, spec, calibration, batch_size)
    quant = None
    if spec.quantization:
        scales = {n: r.scales for n, r in reconstructed.items() if r.scales is not None}
        zeros = {n: r.zero_points for n, r in reconstructed.items() if r.zero_points is not None}
        quant = quantize_model_(model, spec.quantization, (b.inputs for b in calibration.batches(batch_size)), scales, zeros)
        quant = replace(quant, folded=tuple(folded) + quant.folded)
    kept = {n: r.keep for n, r in reconstructed.items() if r.keep is not None}
    masked = {n: s for n, s in spec.pruning.items() if s.pattern != "channel" and n not in kept}
    masks = prune_model_(model, masked, _saliency(model, masked, spec, calibration)) if masked else None
    masks = _with_reconstructed_masks(model, masks, kept, spec.pruning)
    result = None
    if spec.finetune is not None:
        result = _finetune(model, teacher, train, spec.finetune, checkpoint_dir)
    remove_masks_(model)
    if quant is not None:
        quant = records_of(model.eval(), quant.folded)
    return ApplyOutcome(quant, _merged(groups, masks), result, report, lowrank)


def _factorise(model: nn.Module, settings: dict[str, LowRankSettings], calibration: DataSource,
               batch_size: int) -> LowRankRecords:
    """Every layer in ``settings`` factorised in place (eval mode, so BatchNorm statistics stay),
    from input statistics on the calibration data; the output Fisher diagonal only where a Fisher
    method asks for it."""
    from compress.lowrank.apply import apply_lowrank_
    from compress.lowrank.fisher import output_fisher_diag
    from compress.lowrank.settings import FISHER
    from compress.reconstruct.stats import collect_layer_stats

    model.eval()
    inputs = [b.inputs for b in calibration.batches(batch_size)]
    plain = [name for name, config in settings.items() if not config.input_drift]
    stats = collect_layer_stats(model, inputs, plain) if plain else {}
    fisher_layers = [name for name, config in settings.items() if config.method in FISHER]
    fisher = output_fisher_diag(model, inputs, fisher_layers) if fisher_layers else None
    return apply_lowrank_(model, settings, stats, fisher, inputs)


def on_factors(spec: ApplySpec, lowrank: LowRankRecords | None) -> ApplySpec:
    """``spec`` for the factorised model: the quantization settings of a factorised layer ``X``
    apply to ``X.0`` and ``X.1``; masks (unstructured, 2:4) on it are refused (``ConfigError``)."""
    if lowrank is None:
        return spec
    from compress.lowrank.modules import factor_names

    masked = [n for n in lowrank.layers if n in spec.pruning and spec.pruning[n].pattern != "channel"]
    if masked:
        raise ConfigError(f"{masked[0]}: pattern {spec.pruning[masked[0]].pattern!r} is not allowed on a factorised "
                          "layer (allowed: channel, or no pruning)")
    quantization = {}
    for name, settings in spec.quantization.items():
        quantization.update(dict.fromkeys(factor_names(name) if name in lowrank.layers else (name,), settings))
    return replace(spec, quantization=quantization)


def _reconstruct(model: nn.Module, spec: ApplySpec, calibration: DataSource, batch_size: int):
    """GPTQ / SparseGPT / Wanda on the layers the spec asks for (nothing to do: empty, None)."""
    from compress.reconstruct.output import output_row_weights
    from compress.reconstruct.sequential import reconstruct_model_
    from compress.reconstruct.settings import loss_aware_layers, reconstruct_settings

    settings = reconstruct_settings(spec.quantization, spec.pruning)
    if not settings:
        return {}, None
    batches = list(calibration.batches(batch_size))
    aware = loss_aware_layers(spec.quantization, spec.pruning, settings)
    row_weights = None
    if aware:
        row_weights = output_row_weights(copy.deepcopy(model), [(b.inputs, b.targets) for b in batches], aware, spec.loss)
    return reconstruct_model_(model, settings, [b.inputs for b in batches], spec.sequential, row_weights)


def _with_reconstructed_masks(model: nn.Module, masks: PruneRecords | None, kept: dict[str, torch.Tensor],
                              settings: dict[str, PruneSettings]) -> PruneRecords | None:
    """Attach the masks the reconstruction chose (persistent, as ``prune_model_`` does) and record them."""
    if not kept:
        return masks
    from compress.prune.persist import apply_mask_

    records = dict(masks.masks) if masks else {}
    for name, keep in kept.items():
        apply_mask_(model.get_submodule(name), keep)
        records[name] = MaskRecord(settings[name], 1 - int(keep.sum()) / keep.numel())
    return PruneRecords(records, masks.groups if masks else {})


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
