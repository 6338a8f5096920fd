"""Export a (compressed) model: ONNX with explicit Q/DQ for a target, checked for it, with parity
against the PyTorch model; the result is a typed ``ExportArtifact`` (``to_dict`` is what
``compress export --json`` writes; ``model.parity.json`` sits next to the ONNX file)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from compress.data.source import DataSource

TARGETS = ("ort", "tensorrt", "onnx")
PARITY_BATCH = 256


@dataclass(frozen=True)
class FusionReport:
    """Which integer kernels ONNX Runtime fused (op → count) and what stayed unfused."""

    fused: dict[str, int]
    unfused_qdq: tuple[str, ...]
    float_layers: tuple[str, ...]


@dataclass(frozen=True)
class TensorRTCheck:
    """TensorRT's explicit-quantization rules (``passed``) and the engine: built and timed, or
    ``{"status": "skipped", "reason": ...}`` where TensorRT or a GPU is missing."""

    rules: str
    engine: dict[str, Any]


@dataclass(frozen=True)
class ExportArtifact:
    target: str
    onnx: Path
    parity: dict[str, Any]  # ParityResult.to_dict(): max_error_steps, top1_agreement, num_examples, ...
    fusion: FusionReport | None = None  # ort only
    tensorrt: TensorRTCheck | None = None  # tensorrt only

    def to_dict(self) -> dict[str, object]:
        payload: dict[str, object] = {"target": self.target, "onnx": str(self.onnx), "parity": self.parity}
        if self.fusion is not None:
            payload["fusion"] = {**asdict(self.fusion), "unfused_qdq": list(self.fusion.unfused_qdq),
                                 "float_layers": list(self.fusion.float_layers)}
        if self.tensorrt is not None:
            payload["tensorrt"] = asdict(self.tensorrt)
        return payload

    @staticmethod
    def from_dict(payload: dict) -> "ExportArtifact":
        fusion, trt = payload.get("fusion"), payload.get("tensorrt")
        return ExportArtifact(
            payload["target"], Path(payload["onnx"]), payload["parity"],
            None if fusion is None else FusionReport(dict(fusion["fused"]), tuple(fusion["unfused_qdq"]),
                                                     tuple(fusion["float_layers"])),
            None if trt is None else TensorRTCheck(trt["rules"], trt["engine"]))


def export_model(model: "nn.Module", data: "DataSource", onnx_path: str | Path, target: str = "ort",
                 force: bool = False) -> ExportArtifact:
    """Export ``model`` to ``onnx_path`` for ``target``, check it, measure parity on ``data``; a
    failed export removes its partial files so the next attempt is not refused."""
    if target not in TARGETS:
        raise InputError(f"unknown export target {target!r}; choose {', '.join(TARGETS)}")
    from compress.lock import output_lock
    from compress.pipeline.checks import check_inputs

    onnx_path = Path(onnx_path)
    check_inputs(model, "to export", data)
    if onnx_path.exists() and not force:
        raise InputError(f"{onnx_path} exists; set force=True to replace it or choose another output directory")
    with output_lock(onnx_path.parent):
        try:
            return _export(model, data, onnx_path, target)
        except BaseException:
            for partial in (onnx_path, onnx_path.with_suffix(".parity.json"),
                            onnx_path.with_name("model.optimized.onnx")):
                partial.unlink(missing_ok=True)
            raise


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, target: str = "ort", data: Any = None,
                      force: bool = False, seq_len: int | None = None) -> ExportArtifact:
    """``compress export``: a checkpoint directory to ``out_dir/model.onnx``; parity on ``data``
    (default: the recipe's evaluation data, held-out split; text data in blocks of ``seq_len``
    tokens, default the recipe's)."""
    from compress.checkpoint.format import is_checkpoint, load_checkpoint
    from compress.pipeline.inputs import data_source

    source = Path(checkpoint)
    if not is_checkpoint(source):
        raise InputError(f"{source} is not a compressed checkpoint directory (write one with apply)")
    model, info = load_checkpoint(source)
    recipe_data = info.recipe["data"]
    if data is None:
        data = recipe_data.get("eval") or recipe_data["calibration"]
        seq_len = seq_len if seq_len is not None else recipe_data.get("seq_len")
    return export_model(model, data_source(data, "heldout", model, seq_len=seq_len), Path(out_dir) / "model.onnx",
                        target, force)


def _export(model: "nn.Module", data: "DataSource", onnx_path: Path, target: str) -> ExportArtifact:
    from compress.export.onnx_qdq import export_onnx
    from compress.backends.ort.parity import measure_parity, write_parity

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    batches = [batch.inputs for batch in data.batches(PARITY_BATCH)]
    export_onnx(model, batches[0], onnx_path, "tensorrt" if target == "tensorrt" else "ort")
    parity = measure_parity(model, onnx_path, batches)
    write_parity(parity, onnx_path)
    return ExportArtifact(target, onnx_path, parity.to_dict(),
                          _fusion(onnx_path) if target == "ort" else None,
                          _tensorrt(onnx_path) if target == "tensorrt" else None)


def _fusion(onnx_path: Path) -> FusionReport:
    from compress.backends.ort.fusion import check_fusion

    report = check_fusion(onnx_path, onnx_path.with_name("model.optimized.onnx"))
    return FusionReport(dict(report.fused), tuple(report.unfused_qdq), tuple(report.float_layers))


def _tensorrt(onnx_path: Path) -> TensorRTCheck:
    from compress.backends.tensorrt.engine import build_and_time_engine, unavailable_reason
    from compress.backends.tensorrt.rules import check_tensorrt_qdq

    violations = check_tensorrt_qdq(onnx_path)
    if violations:
        raise InputError(f"{onnx_path} breaks {len(violations)} TensorRT rule(s), e.g. {violations[0]}")
    reason = unavailable_reason()
    engine = {"status": "skipped", "reason": reason} if reason else build_and_time_engine(onnx_path).to_dict()
    return TensorRTCheck("passed", engine)
