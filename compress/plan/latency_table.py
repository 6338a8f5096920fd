"""Per-layer latency on the target backend, measured, for ``latency_ms`` budgets.

Each planned layer is exported alone (``layer_onnx.py``) in every variant its options map to:
float, weight-only (int8 codes dequantized on every call, as exported), int8 (weights ≤ 8 bits
*and* an 8-bit input: the only case ONNX Runtime runs an integer kernel), and channel-pruned widths.
Unstructured and 2:4 zeros cost the same as dense on ORT CPU (DESIGN §6), so they share the
dense variant's time. All variants are timed round-robin in one run (``compress.export.latency``);
the table keeps median and p90 per entry, and is cached per model structure, shapes, batch size,
thread count and ORT version.

A plan's latency is the sum of its layers' isolated times: it ranks options on this machine but
leaves out the unplanned ops (activations, pooling, attention softmax) and inter-layer effects.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from compress.plan.sensitivity import LayerOption

BACKENDS = ("ort-cpu",)


@dataclass(frozen=True)
class LatencyTable:
    backend: str
    batch_size: int
    threads: int
    median_ms: dict[str, dict[str, float]]  # layer -> variant -> milliseconds
    p90_ms: dict[str, dict[str, float]]
    onnxruntime_version: str

    def latency(self, name: str, option: LayerOption) -> float:
        return self.median_ms[name][variant(option)]

    def noise(self) -> float:
        """Median over entries of p90 / median − 1: how much one entry moves between runs."""
        ratios = sorted(self.p90_ms[n][v] / self.median_ms[n][v] - 1 for n in self.median_ms for v in self.median_ms[n])
        return ratios[len(ratios) // 2]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(payload: dict) -> "LatencyTable":
        return LatencyTable(**payload)


def variant(option: LayerOption) -> str:
    """What the backend runs for an option: ``fp32``, ``weight-only`` or ``int8``, with ``+chS``
    for channel pruning."""
    kind = "fp32" if option.bits is None else ("weight-only" if option.act_bits is None else "int8")
    return f"{kind}+ch{option.sparsity:g}" if option.pattern == "channel" and option.sparsity > 0 else kind


def input_shapes(model: nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str]) -> dict[str, tuple[int, ...]]:
    """Per-sample input shape of every named layer (batch dimension dropped)."""
    from compress.plan.observe import observe_layers

    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, _layer: nn.Module, x: torch.Tensor, _y: torch.Tensor) -> None:
        shapes.setdefault(name, tuple(x.shape[1:]))

    observe_layers(model, [inputs], names, record)
    return shapes


def latency_table(model: nn.Module, inputs: tuple[torch.Tensor, ...], options: dict[str, list[LayerOption]],
                  batch_size: int = 1, threads: int = 1) -> LatencyTable:
    """The measured (or cached) table for every layer and variant in ``options``."""
    import onnxruntime

    from compress.cache import cache_dir
    from compress.jsonio import write_json

    shapes = input_shapes(model, inputs, list(options))
    variants = {name: sorted({variant(o) for o in opts}) for name, opts in options.items()}
    key = _cache_key(model, shapes, variants, batch_size, threads, onnxruntime.__version__)
    path = cache_dir("latency") / f"{key}.json"
    if path.exists():
        return LatencyTable.from_dict(json.loads(path.read_text()))
    table = _measure(model, shapes, variants, batch_size, threads, onnxruntime.__version__)
    write_json(path, table.to_dict())
    return table


def _measure(model: nn.Module, shapes: dict[str, tuple[int, ...]], variants: dict[str, list[str]],
             batch_size: int, threads: int, version: str) -> LatencyTable:
    from compress.export.latency import LatencySpec, measure_latency
    from compress.plan.layer_onnx import layer_graph

    graphs = {}
    for name, kinds in variants.items():
        module = model.get_submodule(name)
        for kind in kinds:
            base, _, pruned = kind.partition("+ch")
            graphs[f"{name}|{kind}"] = layer_graph(module, (batch_size, *shapes[name]), base, float(pruned or 0))
    result = measure_latency(graphs, LatencySpec(batch_sizes=(batch_size,), intra_op_threads=threads))
    median: dict[str, dict[str, float]] = {name: {} for name in variants}
    p90: dict[str, dict[str, float]] = {name: {} for name in variants}
    for measurement in result.measurements:
        name, kind = measurement.model.split("|")
        median[name][kind], p90[name][kind] = measurement.median_ms, measurement.p90_ms
    return LatencyTable("ort-cpu", batch_size, threads, median, p90, version)


def _cache_key(model: nn.Module, shapes: dict, variants: dict, batch_size: int, threads: int, version: str) -> str:
    layers = {name: [repr(model.get_submodule(name)), list(shapes[name]), variants[name]] for name in variants}
    text = json.dumps([layers, batch_size, threads, version, _cpu()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _cpu() -> str:
    """The processor model: a table measured on one machine does not describe another."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
