"""ONNX Runtime CPU sessions at a fixed optimisation level and thread count."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime


def ort_session(
    path: str | Path, threads: int = 1, optimized_path: str | Path | None = None
) -> "onnxruntime.InferenceSession":
    """A CPU session at ORT_ENABLE_ALL with ``threads`` intra-op threads (and one inter-op thread);
    ``optimized_path`` saves the optimised graph ORT actually runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
