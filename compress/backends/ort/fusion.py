"""What ONNX Runtime made of a Q/DQ model: fused integer kernels and the Q/DQ left unfused.

ORT (CPU, level ALL) rewrites DQ→Conv→Q into QLinearConv, DQ→Gemm[→Q] into QGemm, DQ→MatMul→Q into
QLinearMatMul, DQ,DQ→Add→Q into QLinearAdd, and drops Q/DQ around MaxPool/Reshape/Flatten. Every
QuantizeLinear / DequantizeLinear still present in the optimised graph runs as a separate float
kernel — DESIGN §4: unfused Q/DQ is slower than float.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from compress.atomic import atomic_path
from compress.backends.ort.session import ort_session
from compress.export.compact_graph import PARAMETER_SUFFIXES, node_labels

FUSED_OPS = (
    "QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "MatMulIntegerToFloat", "ConvInteger",
    "MatMulNBits", "QLinearAdd", "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool",
    "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "DynamicQuantizeMatMul",
)  # fmt: skip
FLOAT_LAYER_OPS = ("Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul", "NchwcConv", "FusedGemm")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class FusionReport:
    """Counts of fused integer kernels by op type, the names of the Q/DQ nodes left unfused and of
    the Conv/Gemm/MatMul nodes still running in float, in the optimised graph saved at ``optimized``."""

    fused: dict[str, int]
    unfused_qdq: tuple[str, ...]
    float_layers: tuple[str, ...]
    optimized: str

    def to_dict(self) -> dict:
        return asdict(self) | {"unfused_qdq": list(self.unfused_qdq), "float_layers": list(self.float_layers)}

    @classmethod
    def from_dict(cls, data: dict) -> "FusionReport":
        return cls(dict(data["fused"]), tuple(data["unfused_qdq"]), tuple(data["float_layers"]), data["optimized"])


def check_fusion(path: str | Path, optimized_path: str | Path | None = None, threads: int = 1) -> FusionReport:
    """Build an ORT session for ``path``, save its optimised graph (default ``<stem>.ort.onnx``
    beside it) and report what was fused."""
    import onnx

    path = Path(path)
    optimized = Path(optimized_path) if optimized_path else path.with_suffix(".ort.onnx")
    with atomic_path(optimized) as partial:
        ort_session(path, threads, partial)
    labels = node_labels(onnx.load(str(path), load_external_data=False).graph)
    nodes = onnx.load(str(optimized)).graph.node
    fused: dict[str, int] = {}
    for node in nodes:
        if node.op_type in FUSED_OPS:
            fused[node.op_type] = fused.get(node.op_type, 0) + 1
    return FusionReport(
        fused=fused,
        unfused_qdq=tuple(_name(node, labels) for node in nodes if node.op_type in QDQ_OPS),
        float_layers=tuple(_name(node, labels) for node in nodes if node.op_type in FLOAT_LAYER_OPS),
        optimized=str(optimized),
    )


def _name(node, labels: dict[str, str]) -> str:
    """What ``node_labels`` called the exported node writing the same tensor (or the tensor ORT
    copied it from); else, for a node ORT made (FusedConv, NCHWc Conv), ``<layer>/<op>`` from a
    kept parameter it reads; else ``<op>:<output tensor>`` (the file names no node; ORT's names
    are made from those)."""
    output = node.output[0] if node.output else ""
    original = output.split("/")[0]  # ORT's copy of a node writes "<tensor>/duplicated"
    parameter = next((t for t in node.input if t.endswith(PARAMETER_SUFFIXES)), None)
    layer = None if parameter is None else f"{parameter.rsplit('.', 1)[0]}/{node.op_type}"
    return labels.get(output) or labels.get(original) or layer or f"{node.op_type}:{output}"
