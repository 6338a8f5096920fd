"""A peer planner run side by side with ours: NVIDIA ModelOpt ``auto_quantize`` (weights only).

How ModelOpt plans (``modelopt/torch/quantization/algorithms.py``, AutoQuantizeGradientSearcher,
nvidia-modelopt 0.47): for every Linear/Conv layer l and format f it scores

    S_lf = Σ_batches Σ_elements (∂L/∂y_l ⊙ (y_l^f − y_l))²,

with y_l the layer's output, y_l^f the same output with only that layer's quantizer on (input
from the float network): a second-order Taylor expansion of the loss in the layer *output* with
the Hessian replaced by the diagonal of the empirical Fisher (Martens, "New insights and
perspectives on the natural gradient method", JMLR 2020), the ½ dropped. Scores are made
non-increasing in the format's bits (``min(score, previous)``), then a 0-1 program (PuLP/CBC)
minimises Σ S subject to Σ_l n_l·c_f ≤ (e/16)·Σ_l n_l over the quantizable layers' weights only,
where c_f = (the format's ``effective_bits``, else ``num_bits``)/16 and "not quantized" costs
16/16 (a BF16 baseline). It refuses any e below the ``num_bits`` of its most aggressive format.

Our ``avg_bits`` counts a float weight as 32 bits. Giving every format ``effective_bits`` =
b·16/F and the target e = budget·16/F makes ModelOpt's constraint Σ n_l b_l ≤ budget·Σ n_l with
float = F bits: F = 32 is our accounting, F = 16 ModelOpt's own.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

from compress.curvature.losses import loss_function
from compress.data.source import DataSource
from compress.errors import InputError
from compress.plan.costs import FLOAT_BITS
from compress.plan.make import plannable_layers
from compress.quant.weights import fake_quantize_per_channel, per_channel_scales

PER_CHANNEL_BITS = (2, 3, 4, 8)


@dataclass(frozen=True)
class PeerLayer:
    """What ModelOpt chose for one layer, read back from the layer's weight quantizer."""

    format: str  # ModelOpt's name of the chosen recipe
    num_bits: int | None  # None: quantizer off (float)
    granularity: str  # "per-channel axis 0", "per-tensor" or "blocks {...}"
    score: float  # ModelOpt's S for the chosen format
    scores: dict[str, float]  # every format it considered -> S


@dataclass(frozen=True)
class PeerResult:
    """A ModelOpt search: per-layer choices, achieved bits both ways, wall time."""

    layers: dict[str, PeerLayer]
    avg_bits: float  # Σ b_l·n_l / Σ n_l over Linear/Conv weights, float = 32 bits (our avg_bits)
    reported_effective_bits: float  # ModelOpt's own figure, in the units it was given
    satisfied: bool  # ModelOpt's solver reported an optimal feasible solution
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PeerResult":
        layers = {name: PeerLayer(**layer) for name, layer in data["layers"].items()}
        return cls(**{**data, "layers": layers})


def per_channel_format(bits: int, float_bits: int = FLOAT_BITS) -> dict:
    """A ModelOpt format: weight-only, symmetric INT``bits`` with one scale per output channel
    (axis 0, max calibration), activations float, costed at bits·16/float_bits."""
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": bits, "axis": 0}},
        ],
        "algorithm": "max",
        "effective_bits": bits * 16 / float_bits,
    }


def modelopt_auto_quantize(
    model: nn.Module,
    data: DataSource,
    avg_bits: float,
    formats: Sequence[int | str] = PER_CHANNEL_BITS,
    float_bits: int = FLOAT_BITS,
    loss: str = "ce",
    batch_size: int = 128,
) -> tuple[nn.Module, PeerResult]:
    """ModelOpt's search on a copy of ``model`` (``model`` is left alone) with every batch of
    ``data`` used to calibrate and to score; an int format is ``per_channel_format(b)``, a string
    a ModelOpt preset name (costed by ModelOpt itself, so use ``float_bits=16`` with presets).
    Returns ModelOpt's fake-quantized model and what it chose."""
    import modelopt.torch.quantization as mtq

    from compress.curvature.prepare import reference_outputs

    if loss == "ce" and not data.has_targets:
        raise InputError(f"data {data.name} has no targets; use loss distill")
    with torch.no_grad():
        batches = [(b.inputs, reference_outputs(model, b, loss)) for b in data.batches(batch_size)]
    function = loss_function(loss)
    peer = copy.deepcopy(model).eval()
    start = time.perf_counter()
    try:
        peer, state = mtq.auto_quantize(
            peer, constraints={"effective_bits": avg_bits * 16 / float_bits},
            quantization_formats=[per_channel_format(f, float_bits) if isinstance(f, int) else f for f in formats],
            data_loader=batches, forward_step=lambda m, batch: m(*batch[0]),
            loss_func=lambda output, batch: function(output, batch[1]),
            num_calib_steps=len(batches), num_score_steps=len(batches), verbose=False)
    except (AssertionError, ValueError) as exc:
        raise InputError(f"ModelOpt auto_quantize refuses avg_bits={avg_bits:g}: {' '.join(str(exc).split())}") from exc
    seconds = time.perf_counter() - start
    return peer, _result(peer, state, seconds)


def _result(peer: nn.Module, state: dict, seconds: float) -> PeerResult:
    layers, bits = {}, {}
    for name, module in plannable_layers(peer).items():
        stats = state["candidate_stats"][f"{name}.quant_recipe"]
        chosen = state["best"]["recipe"][f"{name}.quant_recipe"]
        scores = {str(f): float(s) for f, s in zip(stats["formats"], stats["scores"])}
        quantizer = module.weight_quantizer
        bits[name] = int(quantizer.num_bits) if quantizer.is_enabled else None
        layers[name] = PeerLayer(str(chosen), bits[name], _granularity(quantizer), scores[str(chosen)], scores)
    return PeerResult(layers, average_bits(peer, bits), float(state["best"]["constraints"]["effective_bits"]),
                      bool(state["best"]["is_satisfied"]), seconds)


def average_bits(model: nn.Module, bits: dict[str, int | None]) -> float:
    """Σ b_l·n_l / Σ n_l over the Linear/Conv weights, a float weight (None) counted as 32 bits:
    what our ``avg_bits`` budget bounds (no scales, no biases)."""
    sizes = {name: m.weight.numel() for name, m in plannable_layers(model).items()}
    if set(bits) != set(sizes):
        raise InputError(f"bits given for {sorted(bits)}, but the model's Linear/Conv layers are {sorted(sizes)}")
    return sum(sizes[n] * (FLOAT_BITS if b is None else b) for n, b in bits.items()) / sum(sizes.values())


def _granularity(quantizer: nn.Module) -> str:
    if getattr(quantizer, "block_sizes", None):
        return f"blocks {quantizer.block_sizes}"
    return "per-tensor" if quantizer.axis is None else f"per-channel axis {quantizer.axis}"


def gap_in_steps(module: nn.Module) -> float:
    """max |Q_ModelOpt(W) − Q_ours(W)| over the weight, in units of our per-channel step s_c
    (0 when ModelOpt's weight quantizer is our symmetric per-channel quantizer)."""
    bits = int(module.weight_quantizer.num_bits)
    with torch.no_grad():
        weight = module.weight.detach()
        theirs = module.weight_quantizer(weight)
        ours = fake_quantize_per_channel(weight, bits)
        shape = (-1,) + (1,) * (weight.ndim - 1)
        return float(((theirs - ours).abs() / per_channel_scales(weight, bits).reshape(shape)).max())
