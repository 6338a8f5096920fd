"""Build a TensorRT engine from an ONNX file and time it on the GPU, or say why not.

TensorRT is optional and imported lazily. Which builder API applies is detected, not assumed by
version number: TensorRT 10 still has ``BuilderFlag.INT8``, which a weakly typed network with
explicit Q/DQ needs; TensorRT 11 removed the precision flags and builds strongly typed networks
only, the types coming from the Q/DQ nodes. Sparse (2:4) weights need ``BuilderFlag.SPARSE_WEIGHTS``
on both. Buffers are torch CUDA tensors; each timed run is bracketed by CUDA events on the
stream, so the time is GPU time of ``execute_async_v3``, summarised like the CPU harness
(median, p90, minimum).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from compress.errors import InputError
from compress.backends.ort.latency import MIN_RUNS, summarize
from compress.backends.tensorrt.rules import check_tensorrt_qdq


@dataclass(frozen=True)
class EngineResult:
    """``status`` is "built" (with timings) or "skipped" (with ``reason``)."""

    status: str
    reason: str = ""
    tensorrt_version: str | None = None
    strongly_typed: bool | None = None
    sparse_weights: bool = False
    batch_size: int = 1
    runs: int = 0
    median_ms: float | None = None
    p90_ms: float | None = None
    min_ms: float | None = None
    engine_path: str | None = None

    def __str__(self) -> str:
        if self.status == "skipped":
            return f"skipped: {self.reason}"
        return f"built (TensorRT {self.tensorrt_version}): median {self.median_ms:.4f} ms, p90 {self.p90_ms:.4f} ms"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(payload: dict) -> "EngineResult":
        return EngineResult(**payload)


def unavailable_reason() -> str | None:
    """Why an engine cannot be built here (None when TensorRT and a CUDA GPU are present)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def build_and_time_engine(onnx_path: str | Path, batch_size: int = 1, sparse_weights: bool = False,
                          warmup: int = 10, runs: int = 100, engine_path: str | Path | None = None) -> EngineResult:
    """Check ``onnx_path`` against TensorRT's Q/DQ rules, build an engine (saved to ``engine_path``
    if given), and time ``runs`` executions after ``warmup``; "skipped" where TensorRT or a GPU
    is missing."""
    if runs < MIN_RUNS:
        raise InputError(f"engine timing needs at least {MIN_RUNS} runs, got {runs}")
    violations = check_tensorrt_qdq(onnx_path)
    if violations:
        raise InputError(f"{onnx_path} breaks TensorRT's quantization rules ({len(violations)}): {violations[0]}")
    reason = unavailable_reason()
    if reason is not None:
        return EngineResult("skipped", reason, batch_size=batch_size, sparse_weights=sparse_weights)
    import tensorrt as trt

    serialized, strongly_typed = _build(trt, Path(onnx_path), batch_size, sparse_weights)
    if engine_path is not None:
        from compress.atomic import write_bytes

        write_bytes(engine_path, bytes(serialized))
    times = _time(trt, serialized, batch_size, warmup, runs)
    return EngineResult("built", "", trt.__version__, strongly_typed, sparse_weights, batch_size, len(times),
                        *summarize(times), str(engine_path) if engine_path else None)


def _build(trt, onnx_path: Path, batch_size: int, sparse_weights: bool) -> tuple[object, bool]:
    """Parse the ONNX and build a serialized engine; returns it and whether the network is
    strongly typed (TensorRT 11, or any version without ``BuilderFlag.INT8``)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = not hasattr(trt.BuilderFlag, "INT8")
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path.parent)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if not strongly_typed:
        config.set_flag(trt.BuilderFlag.INT8)
    if sparse_weights:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    profile = _batch_profile(builder, network, batch_size)
    if profile is not None:
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(f"TensorRT could not build an engine from {onnx_path}; see its log above")
    return serialized, strongly_typed


def _batch_profile(builder, network, batch_size: int):
    """An optimisation profile pinning a dynamic leading dimension to ``batch_size`` (None when
    every input shape is static)."""
    profile, dynamic = builder.create_optimization_profile(), False
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shape = list(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise InputError(f"input {tensor.name} has dynamic dimensions {shape}; only the batch axis may be dynamic")
        if shape and shape[0] < 0:
            dynamic = True
            shape[0] = batch_size
            profile.set_shape(tensor.name, shape, shape, shape)
    return profile if dynamic else None


def _time(trt, serialized, batch_size: int, warmup: int, runs: int) -> list[float]:
    """GPU milliseconds of ``runs`` executions, each between two CUDA events on one stream."""
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(serialized)
    context = engine.create_execution_context()
    buffers = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = [batch_size if d < 0 else d for d in engine.get_tensor_shape(name)]
        if is_input:
            context.set_input_shape(name, shape)
        else:
            shape = list(context.get_tensor_shape(name))
        dtype = _torch_dtype(trt, engine.get_tensor_dtype(name))
        tensor = (torch.randn(shape, device="cuda").to(dtype) if is_input and dtype.is_floating_point
                  else torch.zeros(shape, dtype=dtype, device="cuda"))
        context.set_tensor_address(name, tensor.data_ptr())
        buffers.append(tensor)
    stream = torch.cuda.Stream()
    times = []
    with torch.cuda.stream(stream):
        for run in range(warmup + runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            if not context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            end.record(stream)
            end.synchronize()
            if run >= warmup:
                times.append(start.elapsed_time(end))
    return times


def _torch_dtype(trt, dtype):
    import torch

    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
             "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool, "UINT8": torch.uint8}
    for name, torch_dtype in table.items():
        if hasattr(trt.DataType, name) and dtype == getattr(trt.DataType, name):
            return torch_dtype
    raise InputError(f"engine I/O type {dtype} has no torch equivalent for timing")
