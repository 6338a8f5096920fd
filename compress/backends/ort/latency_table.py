"""Per-layer latency on ONNX Runtime CPU, measured, for ``latency_ms`` budgets.

Each planned layer is exported alone, by the real exporter, in every variant its options map to
(``compress.vocab.costs.latency_variant``: float, weight-only, int8, with channels removed as the
plan removes them; ``layer_variants.py``). All variants are timed round-robin in one run
(``latency.py``); the table keeps median and p90 per entry, and is cached per model structure,
shapes, variants, batch size, thread count, ORT version and processor. ``costs()`` is the plain
table the planner consumes (``LatencyCosts``).

Weight-only options are timed as what the exporter writes for ORT: the ``fold`` form (codes → Cast →
Mul, constant-folded by ORT at session start into a float weight), i.e. the float layer. They share
the ``fp32`` entry (``deployed_variant``), so on this backend a weight-only option is a size option
only and costs the FP32 latency exactly; every layer's ``fp32`` entry is always measured (the plan's
"never slower than float" bound needs it).

A plan's latency is the sum of its layers' isolated times: it ranks options on this machine but
leaves out the unplanned ops (pooling, attention softmax) and inter-layer effects (Q/DQ between int8
and float neighbours, fused int8 chains); ``plan_latency.py`` times whole plans for that.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from compress.plan.channels import ChannelPlan
from compress.vocab.costs import LatencyCosts, latency_variant
from compress.vocab.options import LayerOption

BACKENDS = ("ort-cpu",)
TABLE_VERSION = 4  # 4: int8 variants with uint8 activations (3: weight-only as its fold form; 2: exporter variants)
FOLDED_KIND = "weight-only"  # the variant ORT runs as float (the exporter's fold form)


def deployed_option(option: LayerOption) -> LayerOption:
    """The option as ORT runs it: a weight-only one is the float layer (same channels removed)."""
    return replace(option, bits=None) if option.bits is not None and option.act_bits is None else option


def deployed_variant(option: LayerOption) -> str:
    """The table entry that times ``option``: ``latency_variant`` of ``deployed_option``."""
    return latency_variant(deployed_option(option))


@dataclass(frozen=True)
class LatencyTable:
    backend: str
    batch_size: int
    threads: int
    median_ms: dict[str, dict[str, float]]  # layer -> variant -> milliseconds
    p90_ms: dict[str, dict[str, float]]
    onnxruntime_version: str

    def latency(self, name: str, option: LayerOption) -> float:
        return self.median_ms[name][deployed_variant(option)]

    def costs(self) -> LatencyCosts:
        """The medians as the planner's cost table, keyed by ``latency_variant``: each weight-only
        entry is its float twin's (the fold form runs as float)."""
        folded = {name: {kind.replace("fp32", FOLDED_KIND, 1): ms for kind, ms in kinds.items() if kind.startswith("fp32")}
                  for name, kinds in self.median_ms.items()}
        return LatencyCosts(self.backend, {name: {**kinds, **folded[name]} for name, kinds in self.median_ms.items()})

    def noise(self) -> float:
        """Median over entries of p90 / median − 1: how much one entry moves between runs."""
        ratios = sorted(self.p90_ms[n][v] / self.median_ms[n][v] - 1 for n in self.median_ms for v in self.median_ms[n])
        return ratios[len(ratios) // 2]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(payload: dict) -> "LatencyTable":
        return LatencyTable(**payload)


def input_shapes(model: nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str]) -> dict[str, tuple[int, ...]]:
    """Per-sample input shape of every named layer (batch dimension dropped)."""
    from compress.plan.observe import observe_layers

    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, _layer: nn.Module, x: torch.Tensor, _y: torch.Tensor) -> None:
        shapes.setdefault(name, tuple(x.shape[1:]))

    observe_layers(model, [inputs], names, record)
    return shapes


def latency_table(model: nn.Module, inputs: tuple[torch.Tensor, ...], options: dict[str, list[LayerOption]],
                  batch_size: int = 1, threads: int = 1, channels: ChannelPlan | None = None) -> LatencyTable:
    """The measured (or cached) table for every layer and variant in ``options``; ``channels`` is
    the plan's channel-group view (needed when options remove channels)."""
    import onnxruntime

    from compress.cache import cache_dir
    from compress.jsonio import write_json
    from compress.plan.channels import channel_plan

    if channels is None:
        removes = any(o.channel_sparsity() or o.input_sparsity for opts in options.values() for o in opts)
        channels = channel_plan(model, list(options)) if removes else ChannelPlan(model, {}, {})
    shapes = input_shapes(model, inputs, list(options))
    variants = {name: {deployed_variant(o): deployed_option(o) for o in (*reversed(opts), LayerOption(None))}
                for name, opts in options.items()}
    key = _cache_key(model, shapes, {n: sorted(v) for n, v in variants.items()}, batch_size, threads,
                     onnxruntime.__version__)
    path = cache_dir("latency") / f"{key}.json"
    if path.exists():
        return LatencyTable.from_dict(json.loads(path.read_text()))
    table = _measure(model, channels, shapes, variants, batch_size, threads, onnxruntime.__version__)
    write_json(path, table.to_dict())
    return table


def _measure(model: nn.Module, channels: ChannelPlan, shapes: dict[str, tuple[int, ...]],
             variants: dict[str, dict[str, LayerOption]], batch_size: int, threads: int, version: str) -> LatencyTable:
    from compress.backends.ort.latency import LatencySpec, measure_latency
    from compress.backends.ort.layer_variants import variant_files

    with tempfile.TemporaryDirectory() as folder:
        files = {f"{name}|{kind}": variant_files(model, channels, name, option, (batch_size, *shapes[name]), Path(folder))
                 for name, kinds in variants.items() for kind, option in kinds.items()}
        result = measure_latency(files, LatencySpec(batch_sizes=(batch_size,), intra_op_threads=threads))
    median: dict[str, dict[str, float]] = {name: {} for name in variants}
    p90: dict[str, dict[str, float]] = {name: {} for name in variants}
    for measurement in result.measurements:
        name, kind = measurement.model.split("|")
        median[name][kind], p90[name][kind] = measurement.median_ms, measurement.p90_ms
    return LatencyTable("ort-cpu", batch_size, threads, median, p90, version)


def _cache_key(model: nn.Module, shapes: dict, variants: dict, batch_size: int, threads: int, version: str) -> str:
    layers = {name: [repr(model.get_submodule(name)), list(shapes[name]), variants[name]] for name in variants}
    text = json.dumps([TABLE_VERSION, layers, batch_size, threads, version, _cpu()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _cpu() -> str:
    """The processor model: a table measured on one machine does not describe another."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
