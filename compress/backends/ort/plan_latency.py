"""Whole plans timed on ONNX Runtime CPU as they deploy: the check the per-layer table cannot make.

The per-layer table (``latency_table.py``) times each layer alone, between a QuantizeLinear and a
DequantizeLinear of its own. Inside a network ORT fuses chains of int8 layers (no Q/DQ between
them), pays a Q/DQ wherever an int8 layer meets a float one, and runs the unplanned ops (pooling,
adds) in whatever precision their neighbours leave them: measured on builtin:mnist-cnn, a plan the
summed table priced below FP32 ran at 0.67× FP32 at batch 32. So a plan is timed whole: the model is
compressed by apply's own code (``compress.apply.pipeline.apply_``, weights rounded to nearest — the
graph and its kernels do not depend on how the codes were found), written by the real exporter
(``export_onnx``, target ``ort``), and every plan is timed in one round-robin run together with the
float model (``latency.measure_latency``: warm-up, alternating runs, medians), at each batch size.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from compress.data.source import DataSource
from compress.vocab.options import LayerOption

DEPLOY_BATCH = 32  # the batch a served CNN is typically timed at; batch 1 is always timed too
RUNS = 40


class OrtPlanLatency:
    """``compress.vocab.costs.PlanLatency`` on ONNX Runtime CPU (``threads`` intra-op threads)."""

    backend = "ort-cpu"

    def __init__(self, model: nn.Module, data: DataSource, batch_sizes: tuple[int, ...] = (1, DEPLOY_BATCH),
                 threads: int = 1, runs: int = RUNS, calibration_batch: int = 128, loss: str = "ce") -> None:
        self.model, self.data, self.loss = model, data, loss
        self.batch_sizes = tuple(dict.fromkeys(batch_sizes))
        self.threads, self.runs, self.calibration_batch = threads, runs, calibration_batch

    def ratios(self, plans: list[dict[str, LayerOption]]) -> list[dict[int, float]]:
        """Per plan, {batch size: median latency ÷ median FP32 latency}, all timed in one run."""
        from compress.backends.ort.latency import LatencySpec, measure_latency
        from compress.progress import progress_bar

        example = next(iter(self.data.batches(1))).inputs
        with tempfile.TemporaryDirectory() as folder:
            files = {"fp32": self._float_file(example, Path(folder) / "fp32.onnx")}
            with progress_bar("exporting candidate plans for ONNX Runtime", len(plans)) as advance:
                for index, plan in enumerate(plans):
                    files[f"plan{index}"] = self._plan_file(plan, example, Path(folder) / f"plan{index}.onnx")
                    advance(1)
            spec = LatencySpec(batch_sizes=self.batch_sizes, runs=self.runs, intra_op_threads=self.threads)
            with progress_bar(f"timing {len(plans)} plans and FP32 on ONNX Runtime", 1) as advance:
                result = measure_latency({name: str(path) for name, path in files.items()}, spec)
                advance(1)
        return [{b: result.get(f"plan{i}", b).median_ms / result.get("fp32", b).median_ms for b in self.batch_sizes}
                for i in range(len(plans))]

    def _float_file(self, example: tuple[torch.Tensor, ...], path: Path) -> Path:
        import onnx

        from compress.export.onnx_qdq import float_onnx

        onnx.save(float_onnx(copy.deepcopy(self.model).eval(), example), path)
        return path

    def _plan_file(self, plan: dict[str, LayerOption], example: tuple[torch.Tensor, ...], path: Path) -> Path:
        """The plan applied by apply's code to a copy (round to nearest) and exported for ORT."""
        from compress.apply.pipeline import ApplySpec, apply_
        from compress.export.onnx_qdq import export_onnx
        from compress.plan.settings import lowrank_settings, plan_settings
        from compress.vocab.costs import signed_activations

        quantization, pruning = plan_settings(plan, signed_activations(self.backend))
        quantization = {name: replace(s, method="rtn") for name, s in quantization.items()}
        model = copy.deepcopy(self.model)
        spec = ApplySpec(quantization, pruning, loss=self.loss, lowrank=lowrank_settings(plan))
        apply_(model, spec, self.data, None, None, self.calibration_batch)
        return export_onnx(model.eval(), example, path, target="ort")
