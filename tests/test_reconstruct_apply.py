"""Reconstruction inside ``apply_``: GPTQ layers keep exactly the reconstruction's scales and codes
(also after a rebuild from records + state dict), SparseGPT masks are the ones recorded and kept, and
loss-aware settings only move what they should."""

from __future__ import annotations

import copy

import pytest
import torch

from compress.apply.pipeline import ApplySpec, apply_
from compress.errors import ConfigError
from compress.prune.records import PruneSettings
from compress.quant.bn_fold import fold_batchnorm_
from compress.quant.quantize import rebuild_quantized_
from compress.quant.records import QuantRecords, QuantSettings
from compress.reconstruct.layer import ReconstructSettings, reconstruct_layer
from compress.reconstruct.stats import collect_layer_stats
from compress.testing.tiny import tiny_convnet, tiny_data


def _applied(quant: dict, prune: dict | None = None, **spec):
    model, data = tiny_convnet(), tiny_data("conv", 64)
    outcome = apply_(model, ApplySpec(quantization=quant, pruning=prune or {}, **spec), data, None, batch_size=32)
    return model, data, outcome


def test_gptq_layers_keep_the_reconstruction_scales_through_rebuild() -> None:
    settings = {name: QuantSettings(weight_bits=3, act_bits=None) for name in ("conv", "mix", "head")}
    model, data, outcome = _applied(settings)
    # the first layer's reconstruction, recomputed by hand from the folded float model's statistics
    reference = tiny_convnet()
    fold_batchnorm_(reference)
    stats = collect_layer_stats(reference, [b.inputs for b in data.batches(32)], ["conv"])["conv"]
    expected = reconstruct_layer(reference.conv.weight, stats, ReconstructSettings(bits=3))
    torch.testing.assert_close(model.conv.weight_scales(), expected.scales)
    torch.testing.assert_close(model.conv.quantized_weight(), expected.weight)
    assert outcome.quant.layers["conv"].fixed_scales and outcome.reconstruction.layers["conv"].damp_raises == 0
    # rebuilt from the records: the same scales, the same outputs
    rebuilt = rebuild_quantized_(tiny_convnet(), QuantRecords.from_dict(outcome.quant.to_dict()))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    for name in ("conv", "mix", "head"):
        torch.testing.assert_close(rebuilt.get_submodule(name).weight_scales(), model.get_submodule(name).weight_scales())
    x = data.inputs[0][:8]
    torch.testing.assert_close(rebuilt(x), model(x))


def test_rtn_layers_still_round_to_nearest() -> None:
    settings = {"head": QuantSettings(weight_bits=3, act_bits=None, method="rtn")}
    model, _, outcome = _applied(settings)
    assert outcome.reconstruction is None and not outcome.quant.layers["head"].fixed_scales
    from compress.quant.weights import per_channel_scales

    torch.testing.assert_close(model.head.weight_scales(), per_channel_scales(model.head.weight, 3))


def test_sparsegpt_masks_are_recorded_and_kept() -> None:
    prune = {"head": PruneSettings(ratio=0.5, criterion="sparsegpt"), "mix": PruneSettings(ratio=1 / 3, criterion="wanda")}
    model, _, outcome = _applied({"head": QuantSettings(weight_bits=4, act_bits=None)}, prune)
    assert outcome.prune.masks["head"].sparsity == round(0.5 * 81) / 81 and int((model.head.weight == 0).sum()) >= 40
    assert torch.all((model.mix.weight.reshape(3, -1) == 0).sum(dim=1) == 1)  # Wanda: per output row
    assert list(outcome.reconstruction.layers) == ["mix", "head"]  # execution order
    with pytest.raises(ConfigError, match="mix: 2:4 needs a reduction size divisible by 4, got 3"):
        _applied({}, {"mix": PruneSettings(ratio=0.5, pattern="2:4", criterion="sparsegpt")})
