"""The compressed checkpoint: one directory that reloads without the recipe.

    OUT/compressed.json   model spec, quantization, pruning and low-rank records (settings,
                          activation grids, kept widths, ranks), the recipe and plan, the
                          fine-tuning result (sharpness history), evaluations before and after,
                          and the bytes of the three files (``CheckpointFiles``)
    OUT/weights.safetensors + OUT/weights.layout.json
                          the state dict (masks baked in, BatchNorms folded) at its real size:
                          integer codes packed at their bit width with the scales and zero points
                          of their grids, zeros implied by a keep-mask where smaller, no pickle
                          (``compress.pack``)

Format version 3 leaves the weight grids (``weight_scales``, ``weight_zero_points``) out of the
quantization records in ``compressed.json``, since the weights file holds them; loading restores
them from there (``quant_grids``), so ``load_checkpoint`` returns the records as they were saved.
Version 2 directories (grids repeated in the JSON) and version 1 (``weights.pt``, a pickled state
dict, read with ``weights_only=True``) still load; a directory from a newer version is refused in
one line.

Reloading builds the model from its spec, factorises the low-rank layers at their recorded ranks
and shapes, resizes channel-pruned layers to the saved widths, replays the quantized structure from
the records and loads the weights strictly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from compress.errors import InputError

if TYPE_CHECKING:
    from compress.pack.state import PackedSize, WeightGrid

INFO_FILE = "compressed.json"
WEIGHTS_FILE = "weights.safetensors"
PICKLED_WEIGHTS_FILE = "weights.pt"  # format version 1
FORMAT = "compress-checkpoint"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
GRIDS_IN_WEIGHTS = 3  # the first version whose JSON leaves the weight grids to the weights file


@dataclass(frozen=True)
class CheckpointFiles:
    """Bytes on disk of a checkpoint directory: the tensor file (of which ``header_bytes`` are
    safetensors' own header), its layout JSON and ``compressed.json`` itself; ``total_bytes``:
    the three together, the checkpoint (``apply``'s resumable fine-tuning state under
    ``checkpoints/`` is no part of it)."""

    tensor_bytes: int
    header_bytes: int
    layout_bytes: int
    info_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.tensor_bytes + self.layout_bytes + self.info_bytes

    def to_dict(self) -> dict[str, int]:
        return asdict(self) | {"total_bytes": self.total_bytes}


@dataclass(frozen=True)
class CheckpointInfo:
    model_spec: str
    model_weights: str | None
    recipe: dict
    quant: dict | None = None  # QuantRecords.to_dict() (in the version-3 file: quant_grids.stored_quant)
    prune: dict | None = None  # PruneRecords.to_dict()
    finetune: dict | None = None  # FinetuneResult.to_dict()
    evaluation: dict = field(default_factory=dict)  # name -> EvalResult dict (before / after)
    files: dict = field(default_factory=dict)  # measured bytes on disk (CheckpointFiles.to_dict())
    lowrank: dict | None = None  # LowRankRecords.to_dict()
    format: str = FORMAT
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(payload: dict) -> "CheckpointInfo":
        if payload.get("format") != FORMAT:
            raise InputError(f"not a compress checkpoint (format {payload.get('format')!r})")
        version = payload.get("version")
        if version not in READABLE_VERSIONS:
            raise InputError(f"checkpoint format version {version!r} is not readable by compress of this version "
                             f"(reads {', '.join(map(str, READABLE_VERSIONS))}); upgrade compress")
        return CheckpointInfo(**payload)


def is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / INFO_FILE).is_file()


def directory_bytes(path: Path) -> int:
    """Bytes on disk of the checkpoint directory ``path``, measured, whatever its version:
    ``compressed.json``, the tensor file and its layout (or a version-1 ``weights.pt``)."""
    from compress.pack.state import layout_path

    files = (INFO_FILE, WEIGHTS_FILE, layout_path(path / WEIGHTS_FILE).name, PICKLED_WEIGHTS_FILE)
    return sum((path / name).stat().st_size for name in files if (path / name).is_file())


def save_checkpoint(model: nn.Module, info: CheckpointInfo, out_dir: Path) -> CheckpointInfo:
    """Write the packed weights then the info (its quantization records without the weight
    grids, ``quant_grids.stored_quant``), each atomically: a crash leaves no directory that looks
    complete. Returns the info as ``load_checkpoint`` reads it back (records with their grids,
    the measured file sizes)."""
    from compress.checkpoint.quant_grids import stored_quant
    from compress.pack.state import write_packed_state

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PICKLED_WEIGHTS_FILE).unlink(missing_ok=True)  # a replaced version-1 checkpoint
    sizes = write_packed_state(out_dir / WEIGHTS_FILE, model)
    written = replace(info, format=FORMAT, version=FORMAT_VERSION)
    stored = replace(written, quant=None if info.quant is None else stored_quant(info.quant))
    files = _write_info(out_dir / INFO_FILE, stored, sizes)
    return replace(written, files=files.to_dict())


def _write_info(path: Path, info: CheckpointInfo, sizes: "PackedSize") -> CheckpointFiles:
    """Write ``info`` with ``files`` counting this very file: the JSON's length depends on the
    digits of its own size, so take the fixed point n = len(JSON with info_bytes n) (it grows
    monotonically and settles within a few rounds)."""
    from compress.atomic import write_text
    from compress.jsonio import json_text

    info_bytes = 0
    while True:
        files = CheckpointFiles(sizes.tensor_bytes, sizes.header_bytes, sizes.metadata_bytes, info_bytes)
        text = json_text(replace(info, files=files.to_dict()).to_dict())
        if len(text.encode("utf-8")) == info_bytes:
            write_text(path, text)
            return files
        info_bytes = len(text.encode("utf-8"))


def read_info(path: Path) -> CheckpointInfo:
    """``compressed.json`` as written: from version 3 on, its quantization records lack the
    weight grids (``load_checkpoint`` returns them restored)."""
    try:
        return CheckpointInfo.from_dict(json.loads((path / INFO_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read checkpoint {path}: {exc}") from exc


def load_checkpoint(path: Path) -> tuple[nn.Module, CheckpointInfo]:
    """The compressed model (eval mode) and its info, the quantization records with their
    weight grids (restored from the weights file for version 3)."""
    from compress.checkpoint.resize import resize_to_state_dict_
    from compress.models.spec import build_model

    info = read_info(path)
    state, grids = _read_state(path, info.version)
    if info.quant is not None and info.version >= GRIDS_IN_WEIGHTS:
        from compress.checkpoint.quant_grids import restored_quant

        info = replace(info, quant=restored_quant(info.quant, grids, str(path / WEIGHTS_FILE)))
    model = build_model(info.model_spec, task=info.recipe.get("model", {}).get("task"))
    if info.lowrank is not None:
        from compress.lowrank.apply import restore_structure_
        from compress.lowrank.records import LowRankRecords

        restore_structure_(model, LowRankRecords.from_dict(info.lowrank))
    model = resize_to_state_dict_(model, state)
    if info.quant is not None:
        from compress.quant.quantize import rebuild_quantized_
        from compress.quant.records import QuantRecords

        rebuild_quantized_(model, QuantRecords.from_dict(info.quant))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"checkpoint {path} does not fit its model {info.model_spec}: "
                        f"{str(exc).splitlines()[0]}") from exc
    return model.eval(), info


def _read_state(path: Path, version: int) -> tuple[dict[str, torch.Tensor], dict[str, "WeightGrid"]]:
    """The saved state dict and the grids of its packed weights: packed safetensors (version 2
    on), or a pickle read with ``weights_only=True`` (version 1; no grids: its JSON has them)."""
    if version >= 2:
        from compress.pack.state import read_packed

        packed = read_packed(path / WEIGHTS_FILE)
        return packed.state, packed.grids
    try:
        return torch.load(path / PICKLED_WEIGHTS_FILE, map_location="cpu", weights_only=True), {}
    except (OSError, RuntimeError) as exc:
        raise InputError(f"cannot read {path / PICKLED_WEIGHTS_FILE}: {exc}") from exc
