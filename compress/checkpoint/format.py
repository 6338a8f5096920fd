"""The compressed checkpoint: one directory that reloads without the recipe.

    OUT/compressed.json   model spec, quantization and pruning records (scales, zero points,
                          calibration ranges, kept widths), the recipe and plan, the fine-tuning
                          result (sharpness history), evaluations before and after
    OUT/weights.pt        the state dict (masks baked in, BatchNorms folded), loaded with
                          ``weights_only=True``

Reloading builds the model from its spec, resizes channel-pruned layers to the saved widths,
replays the quantized structure from the records and loads the weights strictly.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from compress.errors import InputError

INFO_FILE = "compressed.json"
WEIGHTS_FILE = "weights.pt"
FORMAT = "compress-checkpoint"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CheckpointInfo:
    model_spec: str
    model_weights: str | None
    recipe: dict
    quant: dict | None = None  # QuantRecords.to_dict()
    prune: dict | None = None  # PruneRecords.to_dict()
    finetune: dict | None = None  # FinetuneResult.to_dict()
    evaluation: dict = field(default_factory=dict)  # name -> EvalResult dict (before / after)
    format: str = FORMAT
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(payload: dict) -> "CheckpointInfo":
        if payload.get("format") != FORMAT or payload.get("version") != FORMAT_VERSION:
            raise InputError(f"not a compress checkpoint of version {FORMAT_VERSION} "
                            f"(format {payload.get('format')!r}, version {payload.get('version')!r})")
        return CheckpointInfo(**payload)


def is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / INFO_FILE).is_file()


def save_checkpoint(model: nn.Module, info: CheckpointInfo, out_dir: Path) -> None:
    """Write weights then info, each atomically: a crash leaves no directory that looks complete."""
    from compress.jsonio import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".{WEIGHTS_FILE}.{os.getpid()}.tmp"
    torch.save(model.state_dict(), partial)
    os.replace(partial, out_dir / WEIGHTS_FILE)
    write_json(out_dir / INFO_FILE, info.to_dict())


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
    try:
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise InputError(f"cannot read {path / WEIGHTS_FILE}: {exc}") from exc
    model = resize_to_state_dict_(build_model(info.model_spec), state)
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
