"""Parity of an exported Q/DQ model (run by ONNX Runtime) with the PyTorch fake-quant model.

Error unit — one OUTPUT quantization step, Δ:
- if the model output is dequantized (DequantizeLinear produces it), Δ is that quantizer's scale;
- if the last layer outputs float (QGemm / MatMulIntegerToFloat), Δ is the scale of that layer's
  INPUT quantizer: the resolution at which the last layer sees its data (a one-step change of one
  input moves an output by |w|·Δ, and |w| < 1 for trained heads);
- if the output comes from float activations (a weight-only last layer), Δ is one step of a
  symmetric int8 grid over the reference output's range, max|y| / 127.
Figures: max and mean |ORT − PyTorch| / Δ over every output element, and top-1 agreement (the
share of examples whose arg-max class matches), as Brevitas counts ORT parity in steps
(tests/brevitas_ort/common.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from compress.jsonio import write_json

from compress.backends.ort.session import ort_session


@dataclass(frozen=True)
class Parity:
    max_error_steps: float
    mean_error_steps: float
    output_step: float
    step_source: str
    top1_agreement: float
    num_examples: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Parity":
        return cls(**data)


def output_step(path: str | Path) -> tuple[float, str]:
    """Δ and where it comes from (the name of the scale initializer), per the module docstring."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    initializers = {init.name: init for init in graph.initializer}
    node = producer[graph.output[0].name]
    if node.op_type != "DequantizeLinear":
        node = producer.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear":
        raise ValueError("the model output is neither dequantized nor computed from a dequantized input")
    return float(numpy_helper.to_array(initializers[node.input[1]])), node.input[1]


def measure_parity(
    model: nn.Module, path: str | Path, batches: Iterable[tuple[torch.Tensor, ...]], threads: int = 1
) -> Parity:
    """Run ``path`` in ORT and ``model`` in PyTorch on every batch and compare (see module docstring)."""
    session = ort_session(path, threads)
    names = [i.name for i in session.get_inputs()]
    errors, largest, agree, positions, count = [], 0.0, 0, 0, 0
    model.eval()
    for inputs in batches:
        with torch.no_grad():
            reference = model(*inputs).numpy()
        output = session.run(None, {name: x.numpy() for name, x in zip(names, inputs)})[0]
        errors.append(np.abs(output.astype(np.float64) - reference).reshape(-1))  # batches may differ in length
        largest = max(largest, float(np.abs(reference).max()))
        agree += int((output.argmax(-1) == reference.argmax(-1)).sum())  # per sample, or per token
        positions += int(np.prod(reference.shape[:-1]))
        count += len(reference)
    try:
        step, source = output_step(path)
    except ValueError:  # float output: an int8 grid over its range
        step, source = max(largest, 1e-12) / 127, "int8 grid of the float output's range"
    error = np.concatenate(errors) / step
    return Parity(float(error.max()), float(error.mean()), step, source, agree / positions, count)


def write_parity(parity: Parity, path: str | Path, sizes: dict[str, int] | None = None) -> Path:
    """Write the figures (and the model's measured ``sizes``, when given) to ``<model>.parity.json``
    next to the .onnx file."""
    target = Path(path).with_suffix(".parity.json")
    write_json(target, {**parity.to_dict(), **(sizes or {})})
    return target
