"""Linear layers that ONNX Runtime runs as integer matrix products, for inputs of any rank.

A Linear on an N-D input exports as Transpose(W) → MatMul (+ Add bias); on a 2-D input as Gemm with
transB=1. Either is replaced, writing the same output tensor, by:

- ``act_dynamic`` (int8 weights, uint8 activations quantized at run time): the standard-ops pattern
  DynamicQuantizeLinear(x) → MatMulInteger(x_q, W_q^T, z_x, 0) → Cast → Mul(s_x · s_w), which ORT
  fuses into DynamicQuantizeMatMul, or into MatMulIntegerToFloat when several layers share one
  input (their DynamicQuantizeLinear is shared, as in q/k/v projections). The codes are
  stored at their real size (``GraphEditor.set_codes``), decoded to int8 by ORT at session start. It computes
  Σ_k (q_x − z_x)·q_w · s_x·s_w,n — the PyTorch model's F.linear(x̂, Ŵ) up to float rounding;
- ``weight_block`` (b-bit block-wise weights, float activations): com.microsoft MatMulNBits with
  B packed as [N, K/B, B·b/8] uint8, two 4-bit codes per byte, low nibble first, stored as
  code + 2^(b−1) so the implicit zero point 2^(b−1) recovers the symmetric code, and scales
  [N, K/B]; accuracy_level 0, so ORT dequantizes exactly to codes·s and multiplies in float.
  Asymmetric blocks (``symmetric`` False) store their unsigned codes u as they are and pass the
  zero points as MatMulNBits' ``zero_points`` input, packed like the codes (two 4-bit zero points
  per byte, low nibble first, each row padded to whole bytes): ORT computes (u − z)·s.

The bias stays a float Add (an Add after Gemm is added when the Gemm carried the bias).
"""

from __future__ import annotations

import numpy as np
import torch

from compress.errors import InputError
from compress.quant.blocks import block_codes
from compress.quant.modules import QuantLayer
from compress.quant.weights import code_range, quantize_per_channel

from .qdq_graph import FLOAT, GraphEditor

NBITS_DOMAIN = "com.microsoft"


def quantize_matmul_layer(editor: GraphEditor, name: str, layer: QuantLayer) -> None:
    """Replace the Gemm / Transpose→MatMul of Linear ``name`` as the module docstring says."""
    node, transpose = _linear_node(editor, name)
    source, output = node.input[0], node.output[0]
    bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else None
    product = f"{name}/product" if bias else output
    editor.remove_node(node)
    if transpose is not None:
        editor.remove_node(transpose)
    if layer.settings.act_dynamic:
        _dynamic_matmul(editor, name, layer, source, product)
    else:
        _nbits_matmul(editor, name, layer, source, product)
    if bias:
        editor.add_node("Add", [product, bias], [output], "")


def _linear_node(editor: GraphEditor, name: str):
    """(the Gemm or MatMul computing Linear ``name``, the Transpose feeding the MatMul or None)."""
    weight = f"{name}.weight"
    for node in editor.consumers.get(weight, []):
        if node.op_type == "Gemm" and node.input[1] == weight and _is_plain_gemm(node):
            return node, None
        if node.op_type == "Transpose" and len(editor.consumers.get(node.output[0], [])) == 1:
            (matmul,) = editor.consumers[node.output[0]]
            if matmul.op_type == "MatMul" and matmul.input[1] == node.output[0]:
                return matmul, node
    raise InputError(f"{name}: no Gemm (transB=1) or Transpose→MatMul reads {weight} in the exported graph")


def _is_plain_gemm(node) -> bool:
    values = {a.name: (a.i if a.type == 2 else a.f) for a in node.attribute}
    return values.get("transB", 0) == 1 and values.get("transA", 0) == 0 and values.get("alpha", 1.0) == 1.0 and values.get("beta", 1.0) == 1.0


def _dynamic_quantized(editor: GraphEditor, name: str, source: str) -> tuple[str, str, str]:
    """(x_q, s_x, z_x) of DynamicQuantizeLinear(source), reusing one already reading ``source``."""
    for node in editor.consumers.get(source, []):
        if node.op_type == "DynamicQuantizeLinear":
            return tuple(node.output)
    outputs = [f"{source}/dynamic_q", f"{source}/dynamic_scale", f"{source}/dynamic_zero_point"]
    editor.add_node("DynamicQuantizeLinear", [source], outputs, f"{name}.input/DynamicQ")
    return tuple(outputs)


def _dynamic_matmul(editor: GraphEditor, name: str, layer: QuantLayer, source: str, output: str) -> None:
    bits = layer.settings.weight_bits
    with torch.no_grad():
        scales = layer.weight_scales().detach().float()
        codes = quantize_per_channel(layer.weight.detach().float(), scales, bits)
    weight = editor.set_codes(f"{name}.weight", np.ascontiguousarray(codes.numpy().T), bits, compact=True)
    scale = editor.set_initializer(f"{name}.weight_scale", scales.numpy())
    zero_point = editor.set_initializer(f"{name}.weight_zero_point", np.zeros(len(scales), dtype=np.int8))
    quantized, input_scale, input_zero_point = _dynamic_quantized(editor, name, source)
    integer, real, combined = f"{name}/MatMulInteger", f"{name}/Cast", f"{name}/scale"
    editor.add_node("MatMulInteger", [quantized, weight, input_zero_point, zero_point], [integer], integer)
    editor.add_node("Cast", [integer], [real], "", to=FLOAT)
    editor.add_node("Mul", [input_scale, scale], [combined], "")
    editor.add_node("Mul", [real, combined], [output], "")


def _nbits_matmul(editor: GraphEditor, name: str, layer: QuantLayer, source: str, output: str) -> None:
    bits, block = layer.settings.weight_bits, layer.settings.weight_block
    if bits != 4:
        raise InputError(f"{name}: block-wise weights export as MatMulNBits with 4 bits only, got {bits}")
    with torch.no_grad():
        scales = layer.weight_scales().detach().float()
        zeros = layer.weight_zero_points()
        zeros = None if zeros is None else zeros.detach().float()
        codes = block_codes(layer.weight.detach().float(), scales, bits, zeros)
    rows, columns = codes.shape
    offset = 0 if zeros is not None else -code_range(bits)[0]
    stored = (codes.to(torch.int64) + offset).numpy().astype(np.uint8).reshape(rows, columns // block, block)
    weight = editor.set_initializer(f"{name}.weight", np.ascontiguousarray(_nibbles(stored)))
    scale = editor.set_initializer(f"{name}.weight_scale", scales.numpy())
    inputs = [source, weight, scale]
    if zeros is not None:
        blocks = zeros.shape[1]
        padded = np.zeros((rows, blocks + blocks % 2), dtype=np.uint8)
        padded[:, :blocks] = zeros.to(torch.int64).numpy()
        inputs.append(editor.set_initializer(f"{name}.weight_zero_point", _nibbles(padded).reshape(-1)))
    _import_domain(editor, NBITS_DOMAIN)
    editor.add_node(
        "MatMulNBits", inputs, [output], f"{name}/MatMulNBits",
        domain=NBITS_DOMAIN, K=columns, N=rows, bits=bits, block_size=block, accuracy_level=0,
    )  # fmt: skip


def _nibbles(values: np.ndarray) -> np.ndarray:
    """Pairs of 4-bit values along the last axis packed into bytes, low nibble first."""
    return np.ascontiguousarray(values[..., 0::2] | (values[..., 1::2] << 4))


def _import_domain(editor: GraphEditor, domain: str) -> None:
    """Record the contrib domain in the model's opset imports (set by ``export_onnx``)."""
    editor.domains.add(domain)
