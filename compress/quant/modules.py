"""Fake-quantized Conv2d / Linear that replace the float layers in place (same module and
parameter names: ``stem.0.weight`` stays ``stem.0.weight``), and the activation quantizer.

A quantized layer computes  y = layer(Q_in(x); Q_w(W), Q_b(b))  then  Q_out(y), where
- Q_w: per-output-channel symmetric, codes in ``weight_code_range`` [q_min, q_max] with the scale
  of ``compress.quant.weights.symmetric_scale``, or learnable
  (LSQ, Esser et al. 2020) initialised there; or per block of input features (``weight_block``,
  ``compress.quant.blocks``; with ``symmetric`` False asymmetric blocks, codes in [0, 2^b − 1] and an
  integer zero point per block); or fixed at the scales (and zero points) a reconstruction chose
  (``fix_weight_scales``);
- Q_in / Q_out: per-tensor activation quantizers (``ActQuantizer``), present as placed by
  ``compress.quant.placement``; or, with ``act_dynamic``, Q_in computed from each input tensor's
  own range at run time (``compress.quant.fake.dynamic_fake_quantize``) and no Q_out;
- Q_b: the bias on the int32 grid of step s_in·s_w,c (what ONNX Runtime's QLinearConv/QGemm
  consume), when both the input and the weight are quantized.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import InputError
from compress.quant.blocks import asymmetric_block_grid, block_scales, expand_block_scales
from compress.quant.calibrate import RangeObserver, calibrated_range, grid
from compress.quant.fake import (
    channel_shape, dynamic_fake_quantize, fake_quantize, lsq_gradient_scale, round_ste, scale_gradient,
)  # fmt: skip
from compress.quant.records import ActRecord, LayerRecord, QuantSettings
from compress.quant.weights import code_range, per_channel_scales, weight_code_range


class ActQuantizer(nn.Module):
    """Per-tensor activation fake-quantizer. While calibrating it passes x through unchanged and
    feeds an observer (with relu(x) when ``observe_relu``); afterwards it fake-quantizes."""

    def __init__(self, bits: int, signed: bool, calibrator: str, percentile: float, observe_relu: bool):
        super().__init__()
        self.bits, self.signed, self.calibrator = bits, signed, calibrator
        self.percentile, self.observe_relu = percentile, observe_relu
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.observer: RangeObserver | None = None

    @classmethod
    def from_record(cls, record: ActRecord) -> "ActQuantizer":
        quantizer = cls(record.bits, record.signed, record.calibrator, record.percentile, record.observe_relu)
        quantizer.scale.fill_(record.scale)
        quantizer.zero_point.fill_(record.zero_point)
        return quantizer

    def record(self) -> ActRecord:
        return ActRecord(
            self.bits, self.signed, float(self.scale), int(self.zero_point),
            self.calibrator, self.percentile, self.observe_relu,
        )  # fmt: skip

    def start_calibration(self) -> None:
        self.observer = RangeObserver()

    def finish_calibration(self) -> None:
        """Fix scale and zero point from the observed range (see ``calibrate.grid``)."""
        low, high = calibrated_range(self.observer, self.calibrator, self.signed, self.percentile, self.bits)
        scale, zero_point, _, _ = grid(low, high, self.bits, self.signed)
        self.scale.fill_(scale)
        self.zero_point.fill_(zero_point)
        self.observer = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.observe(torch.relu(x) if self.observe_relu else x)
            return x
        return fake_quantize(x, self.scale, self.zero_point, *code_range(self.bits, self.signed))


class QuantLayer:
    """Shared quantization state and maths of ``QuantConv2d`` and ``QuantLinear``."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def setup_quantization(self, settings: QuantSettings, input_from: str | None) -> None:
        self.settings, self.input_from = settings, input_from
        self.input_quantizer: ActQuantizer | None = None
        self.output_quantizer: ActQuantizer | None = None
        if settings.learnable_scales:
            self.weight_scale = nn.Parameter(per_channel_scales(self.weight, settings.weight_bits))
        if self.static_input():  # the scale of the grid the input lies on (set by calibration)
            self.register_buffer("input_scale", torch.tensor(1.0))

    def static_input(self) -> bool:
        """Whether the input lies on a calibrated (static) grid."""
        return self.settings.act_bits is not None and not self.settings.act_dynamic

    def fix_weight_scales(self, scales: torch.Tensor, zero_points: torch.Tensor | None = None) -> None:
        """Hold the weight scales at ``scales`` ([N], or [N, K/B] with ``weight_block``; e.g. a GPTQ
        reconstruction's) instead of recomputing them from the weight, so the codes the weights were
        reconstructed for stay the codes: a buffer, carried by the state dict. With learnable scales
        they initialise the LSQ scales instead. ``zero_points`` ([N, K/B]): those of asymmetric
        blocks, held the same way."""
        if (zero_points is None) != self.settings.symmetric:
            raise InputError("zero points are given exactly for asymmetric weight blocks (settings.symmetric false)")
        if zero_points is not None:
            self.register_buffer("fixed_weight_zero_points", zero_points.detach().to(self.weight.dtype).clone())
        scales = scales.detach().to(self.weight.dtype)
        if self.settings.learnable_scales:
            with torch.no_grad():
                self.weight_scale.copy_(scales.reshape(self.weight_scale.shape))
        else:
            self.register_buffer("fixed_weight_scales", scales.clone())

    def has_fixed_scales(self) -> bool:
        return "fixed_weight_scales" in self._buffers

    def weight_scales(self) -> torch.Tensor:
        """s_c per output channel: learnable (LSQ), fixed (``fix_weight_scales``) or ``symmetric_scale`` of W_c;
        [N, K/B] block scales with ``weight_block``."""
        if self.settings.learnable_scales:
            return self.weight_scale
        if self.has_fixed_scales():
            return self.fixed_weight_scales
        if not self.settings.symmetric:
            return asymmetric_block_grid(self.weight, self.settings.weight_bits, self.settings.weight_block)[0]
        if self.settings.weight_block is not None:
            return block_scales(self.weight, self.settings.weight_bits, self.settings.weight_block)
        return per_channel_scales(self.weight, self.settings.weight_bits)

    def weight_zero_points(self) -> torch.Tensor | None:
        """z per block, [N, K/B] (integer-valued, the weight's dtype), of asymmetric blocks: fixed
        (``fix_weight_scales``) or from ``asymmetric_block_grid``; None on a symmetric grid."""
        if self.settings.symmetric:
            return None
        if "fixed_weight_zero_points" in self._buffers:
            return self.fixed_weight_zero_points
        return asymmetric_block_grid(self.weight, self.settings.weight_bits, self.settings.weight_block)[1]

    def quantized_weight(self) -> torch.Tensor:
        bits = self.settings.weight_bits
        if bits is None:
            return self.weight
        scales = self.weight_scales()
        if self.settings.learnable_scales:
            scales = scale_gradient(scales, lsq_gradient_scale(self.weight, bits))
        if not self.settings.symmetric:
            columns = self.weight.shape[1]
            zeros = expand_block_scales(self.weight_zero_points(), columns)
            return fake_quantize(self.weight, expand_block_scales(scales, columns), zeros, *code_range(bits, signed=False))
        if self.settings.weight_block is not None:
            return fake_quantize(self.weight, expand_block_scales(scales, self.weight.shape[1]), 0, *weight_code_range(bits))
        return fake_quantize(self.weight, scales.reshape(channel_shape(self.weight)), 0, *weight_code_range(bits))

    def bias_scales(self) -> torch.Tensor | None:
        """s_in · s_w,c: the int32 bias grid, when input and weight are both quantized."""
        if self.bias is None or self.settings.weight_bits is None or not self.static_input():
            return None
        return self.input_scale * self.weight_scales().detach()

    def quantized_bias(self) -> torch.Tensor | None:
        scales = self.bias_scales()
        if scales is None or self.calibrating():
            return self.bias
        return round_ste(self.bias / scales) * scales

    def calibrating(self) -> bool:
        return any(q is not None and q.observer is not None for q in (self.input_quantizer, self.output_quantizer))

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.settings.act_dynamic:
            return dynamic_fake_quantize(x)
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def quantize_output(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.output_quantizer is None else self.output_quantizer(y)

    def record(self, kind: str) -> LayerRecord:
        weight_bits = self.settings.weight_bits
        scales = None if weight_bits is None else tuple(self.weight_scales().detach().flatten().tolist())
        zeros = self.weight_zero_points() if weight_bits is not None else None
        has_input_grid = self.static_input()
        return LayerRecord(
            kind=kind,
            settings=self.settings,
            weight_scales=scales,
            input=None if self.input_quantizer is None else self.input_quantizer.record(),
            input_from=self.input_from,
            input_scale=float(self.input_scale) if has_input_grid else None,
            output=None if self.output_quantizer is None else self.output_quantizer.record(),
            fixed_scales=self.has_fixed_scales(),
            weight_zero_points=None if zeros is None else tuple(int(z) for z in zeros.detach().flatten().tolist()),
        )


class QuantConv2d(QuantLayer, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized weight, bias, input and output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(self.quantize_input(x), self.quantized_weight(), self.quantized_bias())
        return self.quantize_output(y)


class QuantLinear(QuantLayer, nn.Linear):
    """``nn.Linear`` with fake-quantized weight, bias, input and output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.linear(self.quantize_input(x), self.quantized_weight(), self.quantized_bias())
        return self.quantize_output(y)


def quant_layer_like(module: nn.Module, settings: QuantSettings, input_from: str | None) -> QuantLayer:
    """A quantized twin of a float Conv2d/Linear sharing its Parameter objects (so optimisers and
    names carry over)."""
    factory = {"device": module.weight.device, "dtype": module.weight.dtype}
    if isinstance(module, nn.Conv2d):
        layer = QuantConv2d(
            module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
            module.dilation, module.groups, module.bias is not None, module.padding_mode, **factory,
        )  # fmt: skip
    else:
        layer = QuantLinear(module.in_features, module.out_features, module.bias is not None, **factory)
    layer.weight, layer.bias = module.weight, module.bias
    layer.setup_quantization(settings, input_from)
    return layer.train(module.training)
