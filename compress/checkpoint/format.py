"""The compressed checkpoint: one directory that reloads without the recipe.

    OUT/compressed.json   model spec, quantization, pruning and low-rank records (scales, zero
                          points, calibration ranges, kept widths, ranks), the recipe and plan, the fine-tuning
                          result (sharpness history), evaluations before and after
    OUT/weights.safetensors + OUT/weights.layout.json
                          the state dict (masks baked in, BatchNorms folded) at its real size:
                          integer codes packed at their bit width, zeros implied by a keep-mask
                          where smaller, no pickle (``compress.pack``)

Format version 1 directories (``weights.pt``, a pickled state dict) still load, with
``weights_only=True``; a directory from a newer version is refused in one line.

Reloading builds the model from its spec, factorises the low-rank layers at their recorded ranks
and shapes, resizes channel-pruned layers to the saved widths, replays the quantized structure from
the records and loads the weights strictly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from compress.errors import InputError

INFO_FILE = "compressed.json"
WEIGHTS_FILE = "weights.safetensors"
PICKLED_WEIGHTS_FILE = "weights.pt"  # format version 1
FORMAT = "compress-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class CheckpointInfo:
    model_spec: str
    model_weights: str | None
    recipe: dict
    quant: dict | None = None  # QuantRecords.to_dict()
    prune: dict | None = None  # PruneRecords.to_dict()
    finetune: dict | None = None  # FinetuneResult.to_dict()
    evaluation: dict = field(default_factory=dict)  # name -> EvalResult dict (before / after)
    files: dict = field(default_factory=dict)  # measured bytes on disk (PackedSize.to_dict())
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


def save_checkpoint(model: nn.Module, info: CheckpointInfo, out_dir: Path) -> CheckpointInfo:
    """Write the packed weights then the info, each atomically: a crash leaves no directory that
    looks complete. Returns the info as written (with the measured file sizes)."""
    from compress.jsonio import write_json
    from compress.pack.state import write_packed_state

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PICKLED_WEIGHTS_FILE).unlink(missing_ok=True)  # a replaced version-1 checkpoint
    sizes = write_packed_state(out_dir / WEIGHTS_FILE, model)
    written = replace(info, files=sizes.to_dict(), format=FORMAT, version=FORMAT_VERSION)
    write_json(out_dir / INFO_FILE, written.to_dict())
    return written


def read_info(path: Path) -> CheckpointInfo:
    try:
        return CheckpointInfo.from_dict(json.loads((path / INFO_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read checkpoint {path}: {exc}") from exc


def load_checkpoint(path: Path) -> tuple[nn.Module, CheckpointInfo]:
    """The compressed model (eval mode) and its info."""
    from compress.checkpoint.resize import resize_to_state_dict_
    from compress.models.spec import build_model

    info = read_info(path)
    state = _read_state(path, info.version)
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


def _read_state(path: Path, version: int) -> dict[str, torch.Tensor]:
    """The saved state dict: packed safetensors (version 2) or a pickle read with
    ``weights_only=True`` (version 1)."""
    if version >= 2:
        from compress.pack.state import read_packed_state

        return read_packed_state(path / WEIGHTS_FILE)
    try:
        return torch.load(path / PICKLED_WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise InputError(f"cannot read {path / PICKLED_WEIGHTS_FILE}: {exc}") from exc
