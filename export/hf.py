"""Hugging Face export (target ``hf``): a transformers model folder whose quantized Linear layers
are in the ``compressed-tensors`` ``pack-quantized`` layout, which transformers (with the
``compressed-tensors`` package) and vLLM load.

    OUT/config.json          the transformers config plus ``quantization_config``:
                             quant_method compressed-tensors, format pack-quantized, one config
                             group per (bits, block) of symmetric int weights, ``targets`` the
                             layer names; activations float
    OUT/model.safetensors    the transformers model's state dict, each quantized Linear ``L`` as
                             L.weight_packed (int32), L.weight_scale, L.weight_shape

Per layer with b-bit codes q ∈ [−2^(b−1), 2^(b−1) − 1] (W ≈ q·s): row n of ``weight_packed`` is the
little-endian bit stream of u = q + 2^(b−1) (``compress.pack.bits``; the offset of
``compress.pack.codes``), zero-padded to a whole number of 32-bit words, ⌈K·b/32⌉ words;
``weight_scale`` is s as [N, 1] (per output channel, strategy ``channel``) or [N, K/B] (blocks of
B input features, strategy ``group``, group_size B). Only weight-only layers (float
activations) export this way; the model must hold a transformers ``PreTrainedModel`` (itself or
a submodule, e.g. builtin:minilm's encoder).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from compress.atomic import atomic_path, write_text
from compress.errors import InputError
from compress.pack.bits import pack_bits
from compress.quant.blocks import block_codes
from compress.quant.modules import QuantLayer
from compress.quant.weights import code_range, quantize_per_channel

WORD_BITS = 32


def export_hf(model: nn.Module, out_dir: str | Path) -> Path:
    """Write ``model``'s transformers part to ``out_dir`` (module docstring); returns the folder."""
    from safetensors.torch import save_file

    prefix, pretrained = pretrained_part(model)
    layers = {name.removeprefix(prefix): module for name, module in model.named_modules()
              if isinstance(module, QuantLayer) and name.startswith(prefix)}
    if not layers:
        raise InputError("the model has no quantized layers inside its transformers model; nothing to export as hf")
    groups: dict[tuple[int, int | None], list[str]] = {}
    state = {name: tensor.detach().contiguous() for name, tensor in pretrained.state_dict().items()}
    for name, layer in layers.items():
        _check_layer(name, layer)
        del state[f"{name}.weight"]
        state.update(_packed(name, layer))
        groups.setdefault((layer.settings.weight_bits, layer.settings.weight_block), []).append(name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as partial:
        save_file(state, str(partial), metadata={"format": "pt"})
    config = pretrained.config.to_dict() | {"quantization_config": _quantization_config(groups)}
    write_text(out / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def pretrained_part(model: nn.Module) -> tuple[str, nn.Module]:
    """(prefix of its parameter names, the transformers PreTrainedModel inside ``model``)."""
    for name, module in model.named_modules():
        if hasattr(module, "config") and hasattr(module, "save_pretrained"):
            return (f"{name}." if name else ""), module
    raise InputError("the hf target needs a Hugging Face transformers model (a PreTrainedModel, or a module holding one)")


def _check_layer(name: str, layer: QuantLayer) -> None:
    settings = layer.settings
    if not isinstance(layer, nn.Linear) or settings.weight_bits is None or settings.act_bits is not None:
        raise InputError(f"{name}: the hf target (compressed-tensors pack-quantized) takes weight-only Linear "
                         "layers (weight_bits set, act_bits None)")
    if not settings.symmetric:
        raise InputError(f"{name}: the hf target writes symmetric codes; asymmetric weight blocks (symmetric false) "
                         "export for ONNX Runtime only (target ort)")


def _packed(name: str, layer: QuantLayer) -> dict[str, torch.Tensor]:
    """L.weight_packed, L.weight_scale, L.weight_shape for Linear ``name``."""
    bits = layer.settings.weight_bits
    with torch.no_grad():
        weight = layer.weight.detach().float()
        scales = layer.weight_scales().detach().float()
        if layer.settings.weight_block is not None:
            codes = block_codes(weight, scales, bits)
        else:
            codes, scales = quantize_per_channel(weight, scales, bits), scales.reshape(-1, 1)
    rows, columns = codes.shape
    return {
        f"{name}.weight_packed": pack_rows(codes.to(torch.int64) - code_range(bits)[0], bits),
        f"{name}.weight_scale": scales.to(layer.weight.dtype).contiguous(),
        f"{name}.weight_shape": torch.tensor([rows, columns], dtype=torch.int64),
    }


def pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 [N, ⌈K·b/32⌉]: each row of unsigned b-bit ``values`` [N, K] as a little-endian bit
    stream in 32-bit words (rows padded with zero values to a multiple of 32, then cut)."""
    rows, columns = values.shape
    padded = math.ceil(columns / WORD_BITS) * WORD_BITS
    values = nn.functional.pad(values, (0, padded - columns))
    words = pack_bits(values, bits).view(torch.int32).reshape(rows, padded * bits // WORD_BITS)
    return words[:, : math.ceil(columns * bits / WORD_BITS)].contiguous()


def _quantization_config(groups: dict[tuple[int, int | None], list[str]]) -> dict:
    config_groups = {}
    for index, ((bits, block), names) in enumerate(sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or 0))):
        weights = {"num_bits": bits, "type": "int", "symmetric": True, "dynamic": False,
                   "strategy": "group" if block else "channel", "group_size": block}
        config_groups[f"group_{index}"] = {"targets": sorted(names), "weights": weights, "input_activations": None,
                                           "output_activations": None}
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": config_groups, "ignore": []}
