"""A quantized model's state dict as a packed ``safetensors`` file plus its JSON layout.

    weights.safetensors    blobs (``compress.pack.layout``): every quantized weight as b-bit
                           codes (dense or keep-mask + non-zero codes), its scales, and every
                           other tensor as stored (biases, quantizer scales, zero points, …)
    weights.layout.json    which tensor is where, its dtype, shape, bit width, and the SHA-256
                           of the tensor file

``read_packed`` returns the state dict and, per packed weight, the grid it was coded on (its
scales and zero points as the layer held them, whether or not the state dict holds them too);
``read_packed_state`` the state dict alone. The rebuilt quantized model (same records) loads that
state dict with ``strict=True`` and computes bit for bit what the written model computed: a
weight comes back as its dequantized value (``compress.pack.codes``), not as the float weight it
was rounded from, which is what the model stores at its real size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.atomic import atomic_path, write_text
from compress.errors import InputError
from compress.pack.codes import decode_codes, dequantized_weight, encode_codes
from compress.pack.layout import CODES_BLOB, CodesSpec, Entry, Layout, dtype_name
from compress.quant.blocks import block_codes, expand_block_scales
from compress.quant.fake import channel_shape
from compress.quant.modules import QuantLayer
from compress.quant.weights import code_range, quantize_per_channel

LAYOUT_SUFFIX = ".layout.json"


@dataclass(frozen=True)
class PackedSize:
    """Bytes on disk: the tensor file (of which ``header_bytes`` are safetensors' own header)
    and the layout JSON beside it (``metadata_bytes``: that file only; a checkpoint directory adds
    its own JSON, ``compress.checkpoint.format.CheckpointFiles``)."""

    tensor_bytes: int
    header_bytes: int
    metadata_bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"tensor_bytes": self.tensor_bytes, "header_bytes": self.header_bytes,
                "metadata_bytes": self.metadata_bytes}


def layout_path(path: Path) -> Path:
    """``weights.safetensors`` → ``weights.layout.json``."""
    return path.with_name(path.stem + LAYOUT_SUFFIX)


def write_packed_state(path: str | Path, model: nn.Module) -> PackedSize:
    """Write ``model.state_dict()`` to ``path`` (safetensors) and its layout beside it, each
    atomically, tensors first (a layout exists only for a complete tensor file)."""
    from safetensors.torch import save_file

    path = Path(path)
    entries, blobs = _pack(model)
    with atomic_path(path) as partial:
        save_file({name: torch.cat(parts) for name, parts in blobs.items()}, str(partial))
        layout = Layout(tuple(entries), _sha256(partial))
    metadata = layout_path(path)
    write_text(metadata, json.dumps(layout.to_dict(), separators=(",", ":")) + "\n")
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    return PackedSize(path.stat().st_size, header, metadata.stat().st_size)


def _pack(model: nn.Module) -> tuple[list[Entry], dict[str, list[torch.Tensor]]]:
    """Entries in state-dict order and the flat pieces of each blob."""
    state = model.state_dict()
    layers = {f"{name}.weight": module for name, module in model.named_modules()
              if isinstance(module, QuantLayer) and module.settings.weight_bits is not None}
    entries: list[Entry] = []
    blobs: dict[str, list[torch.Tensor]] = {}

    def add(entry: Entry, flat: torch.Tensor) -> None:
        entries.append(entry)
        blobs.setdefault(entry.blob, []).append(flat)

    for name, tensor in state.items():
        layer = layers.get(name)
        if layer is None:
            add(Entry(name, dtype_name(tensor.dtype), tuple(tensor.shape)), tensor.detach().reshape(-1).contiguous())
            continue
        codes, scales = _codes_and_scales(layer)
        scales_name = _scales_entry(name, scales, state)
        if scales_name not in state:
            add(Entry(scales_name, "float32", tuple(scales.shape), in_state=False), scales.reshape(-1).contiguous())
        zeros_name = None
        if not layer.settings.symmetric:
            zeros_name = _zero_points_entry(name, layer, state, add)
            codes = codes + code_range(layer.settings.weight_bits)[0]  # stored as u itself (``compress.pack.codes``)
        encoded = encode_codes(codes, layer.settings.weight_bits)
        spec = CodesSpec(layer.settings.weight_bits, scales_name, layer.settings.weight_block, encoded.masked,
                         encoded.kept, zeros_name)
        add(Entry(name, dtype_name(tensor.dtype), tuple(tensor.shape), spec), encoded.payload)
    return entries, blobs


def _codes_and_scales(layer: QuantLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """The integer codes the layer computes with, and its scales (float32)."""
    with torch.no_grad():
        scales = layer.weight_scales().detach().float()
        weight = layer.weight.detach().float()
        if layer.settings.weight_block is not None:
            zeros = layer.weight_zero_points()
            zeros = None if zeros is None else zeros.detach().float()
            return block_codes(weight, scales, layer.settings.weight_bits, zeros), scales
        return quantize_per_channel(weight, scales, layer.settings.weight_bits), scales


def _zero_points_entry(weight_name: str, layer: QuantLayer, state: dict[str, torch.Tensor], add) -> str:
    """The state-dict entry holding the layer's fixed zero points, else a new float32 entry
    ``<weight>.zero_points`` kept only to decode the codes."""
    stored = weight_name.removesuffix("weight") + "fixed_weight_zero_points"
    if stored in state:
        return stored
    zeros = layer.weight_zero_points().detach().float()
    add(Entry(f"{weight_name}.zero_points", "float32", tuple(zeros.shape), in_state=False), zeros.reshape(-1).contiguous())
    return f"{weight_name}.zero_points"


def _scales_entry(weight_name: str, scales: torch.Tensor, state: dict[str, torch.Tensor]) -> str:
    """The state-dict entry already holding exactly these scales (learned ``weight_scale`` or
    ``fixed_weight_scales``), else a new entry ``<weight>.scales`` kept only to decode the codes."""
    prefix = weight_name.removesuffix("weight")
    for stored in (prefix + "weight_scale", prefix + "fixed_weight_scales"):
        held = state.get(stored)
        if held is not None and held.dtype == torch.float32 and held.numel() == scales.numel() \
                and torch.equal(held.reshape(scales.shape), scales):
            return stored
    return f"{weight_name}.scales"


@dataclass(frozen=True)
class WeightGrid:
    """The grid a packed weight's codes are on: ``scales`` (float32, per output channel [N] or
    per block [N, K/B]) and the ``zero_points`` of asymmetric blocks ([N, K/B], integer-valued
    float32; None for symmetric codes), exactly as ``QuantLayer.weight_scales`` /
    ``weight_zero_points`` gave them when the file was written."""

    scales: torch.Tensor
    zero_points: torch.Tensor | None


@dataclass(frozen=True)
class PackedState:
    """What a packed tensor file holds: the state dict, and the grid of each packed weight by its
    state-dict name."""

    state: dict[str, torch.Tensor]
    grids: dict[str, WeightGrid]


def read_packed_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict written by ``write_packed_state`` (``read_packed``)."""
    return read_packed(path).state


def read_packed(path: str | Path) -> PackedState:
    """The state dict written by ``write_packed_state`` and the grids of its packed weights;
    InputError (one line) for a missing, truncated or edited file, or a layout that does not
    match its tensors."""
    path = Path(path)
    layout = _read_layout(path)
    blobs = _read_blobs(path, layout)
    plain: dict[str, torch.Tensor] = {}
    cursor = dict.fromkeys(blobs, 0)
    pieces: dict[str, torch.Tensor] = {}
    for entry in layout.entries:
        start = cursor[entry.blob]
        pieces[entry.name] = blobs[entry.blob][start:start + entry.size]
        cursor[entry.blob] = start + entry.size
        if entry.codes is None:
            plain[entry.name] = pieces[entry.name].reshape(entry.shape).clone()
    state, grids = {}, {}
    for entry in layout.entries:
        if entry.codes is not None:
            state[entry.name] = _decoded(entry, pieces[entry.name], plain, path)
            grids[entry.name] = WeightGrid(plain[entry.codes.scales],
                                           None if entry.codes.zero_points is None else plain[entry.codes.zero_points])
        elif entry.in_state:
            state[entry.name] = plain[entry.name]
    return PackedState(state, grids)


def _decoded(entry: Entry, payload: torch.Tensor, plain: dict[str, torch.Tensor], path: Path) -> torch.Tensor:
    spec = entry.codes
    scales = plain.get(spec.scales)
    try:
        if scales is None:
            raise ValueError(f"its scales entry {spec.scales!r} is missing")
        codes = decode_codes(payload, spec.bits, entry.numel, spec.masked, spec.kept).reshape(entry.shape)
        if spec.block is not None:
            expanded = expand_block_scales(scales.reshape(entry.shape[0], -1), entry.shape[1])
        else:
            expanded = scales.reshape(channel_shape(codes))
        if spec.zero_points is not None:
            zeros = plain.get(spec.zero_points)
            if zeros is None:
                raise ValueError(f"its zero points entry {spec.zero_points!r} is missing")
            codes = codes - code_range(spec.bits)[0] - expand_block_scales(zeros.reshape(entry.shape[0], -1), entry.shape[1])
        return dequantized_weight(codes, expanded, getattr(torch, entry.dtype))
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: {entry.name} cannot be decoded ({exc}); the layout does not match its tensors") from exc


def _read_layout(path: Path) -> Layout:
    metadata = layout_path(path)
    try:
        data = json.loads(metadata.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {metadata}: {exc.strerror}; a packed state needs its layout file") from exc
    except ValueError as exc:
        raise InputError(f"{metadata} is not valid JSON ({exc})") from exc
    return Layout.from_dict(data, str(metadata))


def _read_blobs(path: Path, layout: Layout) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        digest = _sha256(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    if digest != layout.tensors_sha256:
        raise InputError(f"{path} is not the file its layout describes (SHA-256 differs): it was truncated or edited")
    try:
        blobs = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} as safetensors: {exc}") from exc
    expected = layout.blob_sizes()
    found = {name: blob.numel() for name, blob in blobs.items()}
    if found != expected:
        raise InputError(f"{path}: its tensors hold {found} elements but the layout describes {expected}; "
                         "the layout does not match its tensors")
    for name, blob in blobs.items():
        wanted = "uint8" if name == CODES_BLOB else name
        if dtype_name(blob.dtype) != wanted or blob.ndim != 1:
            raise InputError(f"{path}: blob {name} is {dtype_name(blob.dtype)} of shape {tuple(blob.shape)}; "
                             "the layout does not match its tensors")
    return blobs


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
