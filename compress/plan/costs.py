"""What an option costs: storage bits of a layer's weight, effective bits, bit operations.

A weight tensor of n entries (after channel removal) and C kept output channels compressed to b
bits with a mask zeroing the fraction s stores, per weight, the smaller of b bits (every code,
zeros included) and 1 + (1 − s)·b bits (a keep-mask and the non-zero codes): the rule the
checkpoint and the ONNX file follow (``compress.pack.codes.encode_codes``), so unstructured and
2:4 sparsity save only where the mask pays for itself (channel pruning removes whole rows and
columns, so needs none); plus one fp32 scale per output channel when quantized (per block of a row with
``weight_block``, with an fp32 zero point per block for asymmetric blocks). Float weights
take 32 bits each, zeros included: no artifact stores a float weight as mask and values.

The ONNX file adds its graph to the weights (``graph_bytes``): the nodes the exporter writes for
each layer (``graph_nodes``, the ONNX Runtime form of ``compress.export.onnx_qdq``) at
``NODE_BYTES`` each, the graph's header, and one decoding graph per packed code stream. It is a
fixed cost, reported as its own line; on builtin:mnist-cnn it is 2-3 kB beside 10-23 kB of
weights.
"""

from __future__ import annotations

from collections.abc import Iterable

from compress.vocab.options import LayerOption

FLOAT_BITS = 32
SCALE_BITS = 32
NODE_BYTES = 40  # one node as the compact exporter writes it: op type, 2-3 one- or two-letter tensor names, attributes
GRAPH_HEADER_BYTES = 160  # IR version, opset imports, the graph's inputs and outputs, each initializer's framing
LAYER_NODES = 2  # the layer's op and, on average, one other op of the model (activation, pooling, add, flatten)
WEIGHT_NODES = {True: 1, False: 2}  # int8 inputs: DequantizeLinear; float inputs: Cast and Mul (ORT folds them)
BIAS_NODES = 2  # int32 bias codes: DequantizeLinear and the Mul computing its scale s_in·s_w
INPUT_QDQ_NODES = 4  # two Q/DQ pairs: before the layer and repeated across the op feeding it
PACKED_NODES = 2  # a packed layer's Slice of the decoded stream and Reshape; a native INT4 layer's Cast: 1
DECODE_NODES = {False: 11, True: 26}  # the decoding graph of one packed stream, dense or keep-mask (``unpack_graph``)
NATIVE_INT4_BITS = 4  # codes of at most this many bits have an ONNX type of 4 bits; wider ones int8


def code_bits(option: LayerOption) -> float:
    """Bits stored per remaining weight under ``option`` (module docstring)."""
    if option.bits is None:
        return FLOAT_BITS
    sparsity = option.mask_sparsity()
    return min(option.bits, 1 + (1 - sparsity) * option.bits) if sparsity > 0 else option.bits


def storage_bits(num_weights: int, scale_count: int, option: LayerOption, zero_point_count: int = 0) -> float:
    """Bits of a stored weight tensor of ``num_weights`` entries (already narrowed by any channel
    removal) with ``scale_count`` fp32 scales (one per output row, or per block of a row) and
    ``zero_point_count`` fp32 zero points (asymmetric blocks) when quantized."""
    grid = 0 if option.bits is None else (scale_count + zero_point_count) * SCALE_BITS
    return num_weights * code_bits(option) + grid


def effective_bits(option: LayerOption, kept_fraction: float = 1.0) -> float:
    """Bits per original weight, codes and mask only: what ``avg_bits`` budgets count;
    ``kept_fraction`` is the share of the weight left after channel removal."""
    return kept_fraction * code_bits(option)


def bops(macs_per_sample: float, option: LayerOption, kept_fraction: float = 1.0) -> float:
    """Bit operations per sample, MACs · b_w · b_a (HAWQ-V3, Yao et al. 2021), float = 32 bits.
    Channel removal removes MACs (``kept_fraction`` of the weight is left); unstructured and 2:4
    zeros do not (no backend here runs sparse kernels for them, DESIGN §6), so they count dense."""
    weight_bits = FLOAT_BITS if option.bits is None else option.bits
    act_bits = FLOAT_BITS if option.act_bits is None else option.act_bits
    return macs_per_sample * kept_fraction * weight_bits * act_bits


def packed_stream(option: LayerOption) -> tuple[int, bool] | None:
    """(bits, masked) of the packed byte stream an ONNX Runtime file stores this layer's codes in,
    or None where they are stored in an ONNX integer type (INT4, int8) because packing them saves
    nothing (the exporter's rule: ``GraphEditor.set_codes``)."""
    if option.bits is None:
        return None
    native = NATIVE_INT4_BITS if option.bits <= NATIVE_INT4_BITS else 8
    bits = code_bits(option)
    return (option.bits, bits < option.bits) if bits < native else None


def graph_nodes(option: LayerOption, has_bias: bool) -> int:
    """ONNX nodes of one layer under ``option`` (both factors of a rank option, the first bias-free):
    ``LAYER_NODES``, its weight's dequantization, with int8 inputs its bias codes and input Q/DQ,
    and the Cast of INT4 codes or the Slice and Reshape of packed ones (module docstring)."""
    factors = 1 if option.rank is None else 2
    nodes = LAYER_NODES * factors
    integer_inputs = option.act_bits is not None
    if option.bits is not None:
        native = 1 if option.bits <= NATIVE_INT4_BITS else 0
        nodes += factors * (WEIGHT_NODES[integer_inputs] + (PACKED_NODES if packed_stream(option) else native))
    if integer_inputs:
        nodes += INPUT_QDQ_NODES + (BIAS_NODES if has_bias else 0)
    return nodes


def graph_bytes(layers: Iterable[tuple[LayerOption, bool]]) -> int:
    """Predicted bytes of an ONNX file beyond its weights for layers given as (option, has a
    bias): the header, ``graph_nodes`` of each layer and one decoding graph per packed stream."""
    layers = list(layers)
    streams = {stream for option, _ in layers if (stream := packed_stream(option)) is not None}
    nodes = sum(graph_nodes(option, bias) for option, bias in layers) + sum(DECODE_NODES[masked] for _, masked in streams)
    return GRAPH_HEADER_BYTES + NODE_BYTES * nodes
