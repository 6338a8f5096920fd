"""Per-layer quantization settings (input) and records (output: what the exporter writes).

Settings are validated on construction: anything a user wrote wrong raises ``ConfigError``.
Records serialise with ``to_dict`` / ``from_dict`` (plain JSON/YAML types) and round-trip exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from compress.errors import ConfigError, InputError
from compress.quant.calibrate import CALIBRATORS
from compress.quant.weights import code_range

RECORDS_VERSION = 1
ACT_BITS = (8,)
METHODS = ("rtn", "gptq")


@dataclass(frozen=True)
class QuantSettings:
    """How one Conv/Linear layer is quantized.

    ``weight_bits``: 2..8 per-channel symmetric, or None (float weights). ``act_bits``: 8 or None
    (float activations). ``act_signed``: symmetric int8 with zero point 0 (TensorRT and ORT) or,
    if False, asymmetric uint8 (ORT only). ``calibrator``: minmax | percentile | mse, with
    ``percentile`` for the percentile calibrator. ``learnable_scales``: LSQ weight scales.
    ``act_dynamic``: the input is quantized at run time, per tensor, as ONNX DynamicQuantizeLinear
    does (asymmetric uint8 over the whole tensor; no calibration, no output quantizer; Linear only,
    exported for ORT's DynamicQuantizeMatMul). ``weight_block``: symmetric weight scales per block
    of ``weight_block`` consecutive input features instead of per output channel (Linear only,
    float activations; 4-bit blocks export as ORT's MatMulNBits). ``method``: how the weights are
    put on their grid: ``gptq`` (second-order reconstruction from calibration data, Frantar et al.
    2022: scales fixed by the MSE clip, columns rounded in turn with the error compensated in the
    rest; ``damp`` is the damping as a fraction of mean(diag H), ``block_size`` the columns per lazy
    update, ``act_order`` sweeps columns by decreasing input energy, ``loss_aware`` weights the
    predicted error by the loss's output curvature, ``input_drift`` fits the float model's output on
    its own inputs rather than the layer's weight on the compressed inputs, ``compress.reconstruct.drift``,
    at the cost of a second copy of the model while it runs) or ``rtn`` (round to nearest, scales from
    max|W|). Float weights (``weight_bits`` None) ignore the method. ``symmetric`` False: asymmetric
    weight blocks, an integer zero point per block (``compress.quant.blocks.asymmetric_block_grid``;
    needs ``weight_block``; ONNX Runtime's MatMulNBits only, not TensorRT).
    """

    weight_bits: int | None = 8
    act_bits: int | None = 8
    act_signed: bool = True
    calibrator: str = "minmax"
    percentile: float = 99.99
    learnable_scales: bool = False
    act_dynamic: bool = False
    weight_block: int | None = None
    method: str = "gptq"
    damp: float = 0.01
    block_size: int = 128
    act_order: bool = True
    loss_aware: bool = False
    input_drift: bool = True
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.weight_bits is not None and not 2 <= self.weight_bits <= 8:
            raise ConfigError(f"weight_bits {self.weight_bits} is not allowed (allowed: 2..8 or None)")
        if self.act_bits is not None and self.act_bits not in ACT_BITS:
            raise ConfigError(f"act_bits {self.act_bits} is not allowed (allowed: 8 or None)")
        if self.calibrator not in CALIBRATORS:
            raise ConfigError(f"calibrator {self.calibrator!r} is not allowed (allowed: {', '.join(CALIBRATORS)})")
        if not 50 < self.percentile <= 100:
            raise ConfigError(f"percentile {self.percentile} is not allowed (allowed: 50 < p <= 100)")
        if self.learnable_scales and self.weight_bits is None:
            raise ConfigError("learnable_scales needs weight_bits (float weights have no scale to learn)")
        if self.act_dynamic and (self.act_bits is None or self.act_signed):
            raise ConfigError("act_dynamic quantizes inputs like ONNX DynamicQuantizeLinear (uint8): set act_bits 8 and act_signed false")
        if self.weight_block is not None:
            self._check_weight_block()
        if not self.symmetric and self.weight_block is None:
            raise ConfigError("symmetric false (zero points per block) needs weight_block (allowed: true, or a weight_block)")
        self._check_method()

    def _check_method(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r} is not allowed (allowed: {', '.join(METHODS)})")
        if not 0 <= self.damp <= 1:
            raise ConfigError(f"damp {self.damp} is not allowed (allowed: 0 <= damp <= 1)")
        if self.block_size < 1:
            raise ConfigError(f"block_size {self.block_size} is not allowed (allowed: an integer >= 1)")

    def _check_weight_block(self) -> None:
        block = self.weight_block
        if block < 16 or block & (block - 1):
            raise ConfigError(f"weight_block {block} is not allowed (allowed: a power of two >= 16)")
        if self.weight_bits is None or self.act_bits is not None or self.learnable_scales:
            raise ConfigError("weight_block needs weight_bits, act_bits None (float activations) and fixed scales")


@dataclass(frozen=True)
class ActRecord:
    """A calibrated per-tensor activation quantizer: x̂ = (clamp(round(x/s) + z, q_min, q_max) − z)·s.

    ``observe_relu``: the quantizer sits on a pre-ReLU output and was calibrated on relu(x)."""

    bits: int
    signed: bool
    scale: float
    zero_point: int
    calibrator: str
    percentile: float
    observe_relu: bool = False

    def code_range(self) -> tuple[int, int]:
        return code_range(self.bits, self.signed)


@dataclass(frozen=True)
class LayerRecord:
    """One quantized layer. ``input`` is its own input quantizer; ``input_from`` names the layer whose
    output quantizer already puts this layer's input on a grid (then ``input`` is None);
    ``input_scale`` is the scale of that grid (the bias grid is ``input_scale · weight_scales``);
    ``fixed_scales``: the weight scales are held at ``weight_scales`` (set by a reconstruction)
    rather than recomputed from the weight; ``weight_zero_points``: the zero points of asymmetric
    blocks (``settings.symmetric`` False), [N, K/B] flattened, else None."""

    kind: str
    settings: QuantSettings
    weight_scales: tuple[float, ...] | None
    input: ActRecord | None
    input_from: str | None
    input_scale: float | None
    output: ActRecord | None
    fixed_scales: bool = False
    weight_zero_points: tuple[int, ...] | None = None

    def to_dict(self) -> dict:
        zeros = None if self.weight_zero_points is None else list(self.weight_zero_points)
        return asdict(self) | {"weight_scales": None if self.weight_scales is None else list(self.weight_scales),
                               "weight_zero_points": zeros}

    @classmethod
    def from_dict(cls, data: dict) -> "LayerRecord":
        scales = data["weight_scales"]
        return cls(
            kind=data["kind"],
            settings=QuantSettings(**data["settings"]),
            weight_scales=None if scales is None else tuple(float(s) for s in scales),
            input=None if data["input"] is None else ActRecord(**data["input"]),
            input_from=data["input_from"],
            input_scale=data["input_scale"],
            output=None if data["output"] is None else ActRecord(**data["output"]),
            fixed_scales=data.get("fixed_scales", False),
            weight_zero_points=None if data.get("weight_zero_points") is None else tuple(int(z) for z in data["weight_zero_points"]),
        )


@dataclass(frozen=True)
class QuantRecords:
    """Everything needed to rebuild and export a quantized model: the BatchNorms folded (conv, bn)
    and, per layer name, its record."""

    layers: dict[str, LayerRecord]
    folded: tuple[tuple[str, str], ...] = ()
    version: int = field(default=RECORDS_VERSION)

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "folded": [list(pair) for pair in self.folded],
            "layers": {name: record.to_dict() for name, record in self.layers.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "QuantRecords":
        if data.get("version") != RECORDS_VERSION:
            raise InputError(f"quantization records version {data.get('version')!r} is not supported (expected 1)")
        return cls(
            layers={name: LayerRecord.from_dict(record) for name, record in data["layers"].items()},
            folded=tuple((conv, bn) for conv, bn in data["folded"]),
            version=data["version"],
        )
