"""Export a (compressed) model: ONNX with explicit Q/DQ for a target, checked for it, with parity
against the PyTorch model; the result is a typed ``ExportArtifact`` (``to_dict`` is what
``compress export --json`` writes; ``model.parity.json`` sits next to the ONNX file)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError
from compress.vocab.targets import EXPORT_TARGETS, ONNX_TARGETS

if TYPE_CHECKING:
    from torch import nn

    from compress.data.source import DataSource
    from compress.pipeline.export_hf import HFArtifact

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
class OnnxBytes:
    """Bytes on disk of an exported model: the whole file and its initializers (weights with their
    scales and zero points); the rest is the graph (nodes, shapes), a fixed cost that matters only
    for tiny models (builtin:mnist-cnn: about 2 kB beside 10-23 kB of weights). Beside them what
    was reported before the export: the stored weights (``evaluation.model_size``) and the
    predicted graph (``evaluation.onnx_graph_bytes``)."""

    file: int
    weights: int
    reported_weights: int | None = None
    predicted_graph: int | None = None

    def to_dict(self) -> dict[str, int]:
        measured = {"file_bytes": self.file, "weight_bytes": self.weights, "graph_bytes": self.file - self.weights}
        if self.reported_weights is None or self.predicted_graph is None:
            return measured
        return measured | {"reported_weight_bytes": self.reported_weights, "predicted_graph_bytes": self.predicted_graph}


def onnx_bytes(path: str | Path, model: "nn.Module | None" = None, target: str = "ort") -> OnnxBytes:
    """Measure ``path``: its size and the serialized size of its initializers; with ``model``, also
    the sizes reported for it (for ``tensorrt``, which stores zeros as codes, without keep-masks)."""
    import onnx

    from compress.evaluation import model_size, onnx_graph_bytes

    proto = onnx.load(str(path), load_external_data=False)
    measured = OnnxBytes(Path(path).stat().st_size, sum(t.ByteSize() for t in proto.graph.initializer))
    if model is None:
        return measured
    implied_zeros = target != "tensorrt"
    return OnnxBytes(measured.file, measured.weights, round(model_size(model, implied_zeros)[1] * 1e6),
                     onnx_graph_bytes(model, implied_zeros))


@dataclass(frozen=True)
class ExportArtifact:
    target: str
    onnx: Path
    parity: dict[str, Any]  # ParityResult.to_dict(): max_error_steps, top1_agreement, num_examples, ...
    fusion: FusionReport | None = None  # ort only
    tensorrt: TensorRTCheck | None = None  # tensorrt only
    size: OnnxBytes | None = None  # measured on disk

    def to_dict(self) -> dict[str, object]:
        payload: dict[str, object] = {"target": self.target, "onnx": str(self.onnx), "parity": self.parity}
        if self.size is not None:
            payload["size"] = self.size.to_dict()
        if self.fusion is not None:
            payload["fusion"] = {**asdict(self.fusion), "unfused_qdq": list(self.fusion.unfused_qdq),
                                 "float_layers": list(self.fusion.float_layers)}
        if self.tensorrt is not None:
            payload["tensorrt"] = asdict(self.tensorrt)
        return payload

    @staticmethod
    def from_dict(payload: dict) -> "ExportArtifact":
        fusion, trt, size = payload.get("fusion"), payload.get("tensorrt"), payload.get("size")
        return ExportArtifact(
            payload["target"], Path(payload["onnx"]), payload["parity"],
            None if fusion is None else FusionReport(dict(fusion["fused"]), tuple(fusion["unfused_qdq"]),
                                                     tuple(fusion["float_layers"])),
            None if trt is None else TensorRTCheck(trt["rules"], trt["engine"]),
            None if size is None else OnnxBytes(size["file_bytes"], size["weight_bytes"],
                                                size.get("reported_weight_bytes"), size.get("predicted_graph_bytes")))


def export_model(model: "nn.Module", data: "DataSource", onnx_path: str | Path, target: str = "ort",
                 force: bool = False) -> ExportArtifact:
    """Export ``model`` to ``onnx_path`` for ``target``, check it, measure parity on ``data``; a
    failed export removes its partial files so the next attempt is not refused."""
    if target not in ONNX_TARGETS:
        hint = " (the hf target writes a folder: export_checkpoint)" if target == "hf" else ""
        raise InputError(f"unknown ONNX export target {target!r}; choose {', '.join(ONNX_TARGETS)}{hint}")
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
                      force: bool = False, seq_len: int | None = None) -> "ExportArtifact | HFArtifact":
    """``compress export``: a checkpoint directory to ``out_dir/model.onnx`` (``out_dir/hf`` for the
    hf target); parity on ``data`` (default: the recipe's evaluation data, held-out split; text data
    in blocks of ``seq_len`` tokens, default the recipe's)."""
    from compress.checkpoint.format import is_checkpoint, load_checkpoint
    from compress.pipeline.inputs import data_source

    if target not in EXPORT_TARGETS:
        raise InputError(f"unknown export target {target!r}; choose {', '.join(EXPORT_TARGETS)}")
    source = Path(checkpoint)
    if not is_checkpoint(source):
        raise InputError(f"{source} is not a compressed checkpoint directory (write one with apply)")
    model, info = load_checkpoint(source)
    recipe_data = info.recipe["data"]
    if data is None:
        data = recipe_data.get("eval") or recipe_data["calibration"]
        seq_len = seq_len if seq_len is not None else recipe_data.get("seq_len")
    source_data = data_source(data, "heldout", model, seq_len=seq_len)
    if target == "hf":
        from compress.pipeline.export_hf import export_hf_folder

        return export_hf_folder(model, source_data, Path(out_dir), force)
    return export_model(model, source_data, Path(out_dir) / "model.onnx", target, force)


def _export(model: "nn.Module", data: "DataSource", onnx_path: Path, target: str) -> ExportArtifact:
    from compress.export.onnx_qdq import export_onnx
    from compress.backends.ort.parity import measure_parity, write_parity

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    batches = [batch.inputs for batch in data.batches(PARITY_BATCH)]
    export_onnx(model, batches[0], onnx_path, "tensorrt" if target == "tensorrt" else "ort")
    parity = measure_parity(model, onnx_path, batches)
    size = onnx_bytes(onnx_path, model, target)
    write_parity(parity, onnx_path, size.to_dict())
    return ExportArtifact(target, onnx_path, parity.to_dict(),
                          _fusion(onnx_path) if target == "ort" else None,
                          _tensorrt(onnx_path) if target == "tensorrt" else None, size)


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
