"""Latency of ONNX Runtime CPU sessions, measured fairly.

Per batch size, every model gets warm-up runs, then ``runs`` timed runs taken round-robin: round r
runs each model once, starting from model r mod M, so slow drift of the machine (frequency, other
processes) hits every model alike. Each model is reported by the median and the 90th percentile
(linear interpolation between order statistics) of its wall-clock times, with a fixed intra-op
thread count and one inter-op thread.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from compress.errors import InputError

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

MIN_RUNS = 30
OPT_LEVELS = ("disable", "basic", "extended", "all")
BACKEND = "ort-cpu"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LatencySpec:
    batch_sizes: tuple[int, ...] = (1,)
    warmup: int = 5
    runs: int = MIN_RUNS
    intra_op_threads: int = 1
    graph_optimization: str = "all"  # one of OPT_LEVELS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.runs < MIN_RUNS:
            raise InputError(f"latency runs must be at least {MIN_RUNS} for a stable median and p90, got {self.runs}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise InputError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.warmup < 0 or self.intra_op_threads < 1:
            raise InputError("warm-up runs must be >= 0 and intra-op threads >= 1")
        if self.graph_optimization not in OPT_LEVELS:
            raise InputError(f"graph optimization {self.graph_optimization!r} is not one of {', '.join(OPT_LEVELS)}")


@dataclass(frozen=True)
class LatencyMeasurement:
    """Wall-clock milliseconds of one model at one batch size on one backend."""

    model: str
    backend: str
    batch_size: int
    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float


@dataclass(frozen=True)
class LatencyResult:
    measurements: tuple[LatencyMeasurement, ...]
    spec: LatencySpec
    onnxruntime_version: str
    seconds: float
    version: int = SCHEMA_VERSION

    def get(self, model: str, batch_size: int) -> LatencyMeasurement:
        for measurement in self.measurements:
            if measurement.model == model and measurement.batch_size == batch_size:
                return measurement
        raise KeyError((model, batch_size))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(payload: dict) -> "LatencyResult":
        spec = payload["spec"]
        return LatencyResult(
            tuple(LatencyMeasurement(**m) for m in payload["measurements"]),
            LatencySpec(**{**spec, "batch_sizes": tuple(spec["batch_sizes"])}),
            payload["onnxruntime_version"], payload["seconds"], payload.get("version", SCHEMA_VERSION))


def summarize(times_ms: Sequence[float]) -> tuple[float, float, float]:
    """(median, 90th percentile, minimum) of the timed runs."""
    times = np.asarray(times_ms, dtype=np.float64)
    return float(np.median(times)), float(np.percentile(times, 90)), float(times.min())


@dataclass
class _Case:
    name: str
    session: "ort.InferenceSession"
    feed: dict[str, np.ndarray]
    times_ms: list[float] = field(default_factory=list)


def measure_latency(models: Mapping[str, "str | Path | bytes | onnx.ModelProto"], spec: LatencySpec = LatencySpec(),
                    feeds: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> LatencyResult:
    """Median and p90 latency of each named model (ONNX file, bytes or ModelProto) per batch size.

    Inputs are random, shaped from each session's inputs with the batch size as the leading
    dimension; ``feeds[name]`` gives a model's inputs instead, and that model is then measured
    only at their leading dimension, which must be one of ``spec.batch_sizes``."""
    import onnxruntime as ort

    if not models:
        raise InputError("no models to measure")
    feeds = dict(feeds or {})
    unknown = sorted(set(feeds) - set(models))
    if unknown:
        raise InputError(f"inputs given for unknown model(s) {unknown}; models are {sorted(models)}")
    start = time.perf_counter()
    sessions = {name: _session(name, source, spec) for name, source in models.items()}
    rng = np.random.default_rng(spec.seed)
    measurements = []
    for batch in spec.batch_sizes:
        cases = [_Case(name, session, _feed(name, session, batch, feeds, rng)) for name, session in sessions.items()
                 if name not in feeds or _leading_dim(name, feeds[name], spec) == batch]
        _round_robin(cases, spec)
        measurements += [LatencyMeasurement(c.name, BACKEND, batch, len(c.times_ms), *summarize(c.times_ms))
                         for c in cases]
    return LatencyResult(tuple(measurements), spec, ort.__version__, time.perf_counter() - start)


def _round_robin(cases: list[_Case], spec: LatencySpec) -> None:
    """Warm up every model, then time ``spec.runs`` rounds, each model once per round, rotating
    which model goes first."""
    for _ in range(spec.warmup):
        for case in cases:
            case.session.run(None, case.feed)
    for round_index in range(spec.runs):
        shift = round_index % len(cases)
        for case in cases[shift:] + cases[:shift]:
            begin = time.perf_counter()
            case.session.run(None, case.feed)
            case.times_ms.append(1e3 * (time.perf_counter() - begin))


def _session(name: str, source: "str | Path | bytes | onnx.ModelProto", spec: LatencySpec) -> "ort.InferenceSession":
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[spec.graph_optimization]
    if not isinstance(source, (str, Path, bytes)):
        source = source.SerializeToString()
    try:
        return ort.InferenceSession(str(source) if isinstance(source, Path) else source, options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        raise InputError(f"ONNX Runtime cannot load model {name}: {str(exc).splitlines()[0]}") from exc


def _leading_dim(name: str, feed: Mapping[str, np.ndarray], spec: LatencySpec) -> int:
    sizes = {int(np.shape(array)[0]) for array in feed.values() if np.ndim(array) > 0}
    if len(sizes) != 1 or next(iter(sizes)) not in spec.batch_sizes:
        raise InputError(f"inputs for model {name} have leading dimensions {sorted(sizes)}; "
                        f"give one batch size among {list(spec.batch_sizes)}")
    return sizes.pop()


def _feed(name: str, session: "ort.InferenceSession", batch: int, feeds: Mapping[str, Mapping[str, np.ndarray]],
          rng: np.random.Generator) -> dict[str, np.ndarray]:
    if name in feeds:
        return dict(feeds[name])
    return {arg.name: _random_input(name, arg, batch, rng) for arg in session.get_inputs()}


def _random_input(model: str, arg, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Standard normal floats, or integers in [0, 100) (token ids), of the input's shape with the
    first dimension set to ``batch``."""
    shape = list(arg.shape)
    if not shape:
        raise InputError(f"model {model} input {arg.name} is a scalar; give its inputs explicitly")
    if isinstance(shape[0], int) and shape[0] != batch:
        raise InputError(f"model {model} input {arg.name} has a fixed batch dimension {shape[0]}; "
                        f"cannot measure batch size {batch} (export it with a dynamic batch axis)")
    shape[0] = batch
    if not all(isinstance(d, int) for d in shape[1:]):
        raise InputError(f"model {model} input {arg.name} has symbolic dimensions {arg.shape[1:]}; "
                        "give its inputs explicitly")
    kinds = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
    if arg.type in kinds:
        return rng.standard_normal(shape).astype(kinds[arg.type])
    integers = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
    if arg.type in integers:
        return rng.integers(0, 100, size=shape).astype(integers[arg.type])
    raise InputError(f"model {model} input {arg.name} has type {arg.type}; give its inputs explicitly")
