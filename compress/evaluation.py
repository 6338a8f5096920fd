"""``compress eval``: top-1 accuracy for classifiers, embedding fidelity for models without labels,
perplexity (and the mean per-token KL to a reference) for causal language models.

Fidelity is the mean over samples of cos(f(x), f_ref(x)), outputs flattened per sample. Data with
next-token targets (``[samples, tokens]``, causal-LM text data) is scored by
``compress.metrics.text``: perplexity over the predicted tokens, and with a reference model the
mean per-token KL(p_ref ‖ p) over the unpadded positions.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from compress.data.source import Batch, DataSource
from compress.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class EvalResult:
    """What ``compress eval`` measured; ``metric`` names which of accuracy / mean_cosine /
    perplexity is set; ``mean_token_kl``: a causal LM's mean per-token KL to its reference
    (None for other models or without a reference). ``size_mb`` is the stored weights;
    ``graph_bytes`` the predicted ONNX graph beside them (``onnx_graph_bytes``), a fixed cost
    each exported file adds (None for a float model); ``checkpoint_bytes``: measured, the whole
    checkpoint directory the model was loaded from (tensors, their layout and ``compressed.json``;
    None for a model that is no checkpoint)."""

    model: str
    data: str
    num_samples: int
    metric: str
    value: float
    num_params: int
    size_mb: float
    seconds: float
    mean_token_kl: float | None = None
    graph_bytes: int | None = None
    checkpoint_bytes: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), self.metric: self.value}


GRID_TENSORS = ("weight_scale", "fixed_weight_scales", "fixed_weight_zero_points")  # a quantized weight's grid, counted with it


def model_size(model: "nn.Module", implied_zeros: bool = True) -> tuple[int, float]:
    """(number of parameters, megabytes (1e6 bytes) of parameters and buffers as stored). A
    quantized layer's weight counts at its bit width with its scales (per channel or per block) and
    zero points, and with its zeros as
    unstructured sparsity (a 1-bit keep-mask), as the planner counts it (``plan/costs.py``);
    ``implied_zeros`` False: zeros stored as codes like any other (a TensorRT file's dense int8)."""
    num_params = sum(p.numel() for p in model.parameters())
    compressed = {id(m.weight): m for m in model.modules() if getattr(getattr(m, "settings", None), "weight_bits", None)}
    grids = {id(t) for m in compressed.values() for attribute in GRID_TENSORS if (t := getattr(m, attribute, None)) is not None}
    tensors = [t for t in [*model.parameters(), *model.buffers()] if id(t) not in grids]  # grids: with their weight
    size_bits = sum(_stored_bits(compressed[id(t)], implied_zeros) if id(t) in compressed else t.numel() * t.element_size() * 8
                    for t in tensors)
    return num_params, size_bits / 8e6


def onnx_graph_bytes(model: "nn.Module", implied_zeros: bool = True) -> int | None:
    """Predicted bytes of the ONNX file beyond its weights, the graph (``plan.costs.graph_bytes``),
    for every compressible layer as apply left it: a fixed cost reported apart from ``model_size``;
    ``implied_zeros`` False: no codes packed with a keep-mask (TensorRT's dense int8). None for a
    model with no quantized layer, which the Q/DQ exporter does not write."""
    from compress.plan.costs import graph_bytes
    from compress.vocab.layers import compressible_layers

    layers = compressible_layers(model).values()
    if not any(getattr(layer, "settings", None) is not None for layer in layers):
        return None
    return graph_bytes((_layer_option(layer, implied_zeros), layer.bias is not None) for layer in layers)


def _stored_bits(layer: "nn.Module", implied_zeros: bool) -> float:
    from compress.plan.costs import storage_bits

    zero_points = layer.weight_zero_points()
    return storage_bits(layer.weight.numel(), layer.weight_scales().numel(), _layer_option(layer, implied_zeros),
                        0 if zero_points is None else zero_points.numel())


def _layer_option(layer: "nn.Module", implied_zeros: bool):
    """The ``LayerOption`` a layer as deployed stands for: its bits, its zeros as unstructured
    sparsity where they are at least 5% of the weight (and ``implied_zeros``), its activation bits."""
    from compress.vocab.options import LayerOption

    settings = getattr(layer, "settings", None)
    if getattr(settings, "weight_bits", None) is None:
        return LayerOption(None, act_bits=getattr(settings, "act_bits", None))
    zeros = float((layer.weight == 0).float().mean())
    return LayerOption(settings.weight_bits, zeros if zeros >= 0.05 and implied_zeros else 0.0, act_bits=settings.act_bits)


def forward(model: "nn.Module", batch: Batch, model_name: str, data_name: str) -> "torch.Tensor":
    """model(*batch.inputs); an error raised inside the model is reported as a data/model mismatch."""
    import torch

    try:
        output = model(*batch.inputs)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        shapes = ", ".join(str(tuple(x.shape)) for x in batch.inputs)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"data {data_name} (inputs of shape {shapes}) does not fit model {model_name}: {message}; "
            "give data shaped as the model expects"
        ) from exc
    if not isinstance(output, torch.Tensor):
        raise InputError(f"model {model_name} returned {type(output).__name__}; eval needs one tensor")
    return output


def evaluate(
    model: "nn.Module",
    model_name: str,
    data: DataSource,
    reference: "nn.Module | None" = None,
    batch_size: int = 256,
) -> EvalResult:
    """Accuracy when ``data`` has class targets, perplexity (and KL to ``reference`` if given)
    when it has next-token targets, else mean cosine similarity to ``reference``'s outputs."""
    import torch

    from compress.metrics.text import causal_lm_scores, has_token_targets
    from compress.progress import progress_bar

    start = time.perf_counter()
    if has_token_targets(data):
        with progress_bar(f"eval {model_name}", len(data)) as advance:
            scores = causal_lm_scores(model, data, reference, batch_size, advance)
        num_params, size_mb = model_size(model)
        return EvalResult(model_name, data.name, len(data), "perplexity", scores.perplexity, num_params, size_mb,
                          time.perf_counter() - start, scores.mean_token_kl, onnx_graph_bytes(model))
    total, score = 0, 0.0
    with torch.inference_mode(), progress_bar(f"eval {model_name}", len(data)) as advance:
        for batch in data.batches(batch_size):
            output = forward(model, batch, model_name, data.name)
            if data.has_targets:
                score += _correct(output, batch.targets, model_name)
            else:
                if reference is None:
                    raise InputError(f"data {data.name} has no targets; name a reference model to compare with")
                expected = forward(reference, batch, "reference", data.name)
                if expected.shape != output.shape:
                    raise InputError(f"the reference outputs shape {tuple(expected.shape)} but model {model_name} "
                                     f"{tuple(output.shape)}; give a reference with outputs like the model's")
                score += torch.nn.functional.cosine_similarity(output.flatten(1), expected.flatten(1)).sum().item()
            total += len(batch)
            advance(len(batch))
    num_params, size_mb = model_size(model)
    metric = "accuracy" if data.has_targets else "mean_cosine"
    return EvalResult(model_name, data.name, total, metric, score / max(total, 1), num_params, size_mb,
                      time.perf_counter() - start, graph_bytes=onnx_graph_bytes(model))


def _correct(output: "torch.Tensor", targets: "torch.Tensor", model_name: str) -> int:
    """Number of rows whose argmax equals the target class."""
    if output.ndim != 2 or int(targets.max()) >= output.shape[1]:
        raise InputError(
            f"model {model_name} outputs shape {tuple(output.shape)}, which cannot be scored against "
            f"class targets up to {int(targets.max())}; a classifier must output (batch, classes)"
        )
    return int((output.argmax(dim=1) == targets).sum())
