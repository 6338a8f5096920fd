"""Weight codes of any width in ONNX at their real size: the packed bytes of
``compress.pack.codes`` (the checkpoint's encoding: a b-bit stream, or a keep-mask followed by the
non-zero codes) as one uint8 initializer, decoded by a small graph of standard ops whose inputs
are all initializers. ONNX Runtime constant-folds that graph when the session starts, so what its
optimiser sees, and fuses, is the plain int8 initializer (checked in the export size tests).
The packed layers of one bit width and form (dense, or masked: each layer's own smaller one) share
one stream (their flattened codes concatenated) and so one decoding graph; each layer's codes are
then a Slice of the decoded stream, reshaped.

Decoding n values of b bits from bytes P (bit j of the stream is bit j mod 8 of byte ⌊j/8⌋):
bits = (P[:, None] >> [0..7]) & 1, flattened, cut to n·b, reshaped [n, b]; u = Σ_j bits_j·2^j;
code = u + q_min = u − 2^(b−1). Masked: the first ⌈n/8⌉ bytes give the keep-mask m ∈ {0, 1}^n, the rest the
k kept codes c; code_i = [0, c_1, …, c_k][m_i·Σ_{l≤i} m_l] (a gather with index 0 for zeros).
"""

from __future__ import annotations

import numpy as np
import torch

from compress.pack.bits import packed_bytes
from compress.pack.codes import encode_codes
from compress.quant.weights import code_range

from .qdq_graph import INT8, GraphEditor

INT32 = 6  # onnx.TensorProto.INT32
SHARED = "unpack"  # prefix of the constants every decoding graph shares


def set_packed_codes(editor: GraphEditor, layers: list[tuple[str, np.ndarray]], bits: int) -> None:
    """The integer codes of ``layers`` ((weight name, codes), all of ``bits`` bits) as one uint8
    initializer (``encode_codes`` of their flattened codes, concatenated) and one decoding
    graph; each layer's codes become the int8 tensor ``name`` of its shape."""
    flat = np.concatenate([codes.reshape(-1) for _, codes in layers]).astype(np.int64)
    encoded = encode_codes(torch.from_numpy(flat), bits)
    stream = f"{SHARED}/codes{bits}{'m' if encoded.masked else ''}"
    payload = editor.set_initializer(stream, encoded.payload.numpy())
    if encoded.masked:
        split = packed_bytes(flat.size, 1)
        mask = _unpack(editor, f"{stream}/m", _slice(editor, payload, 0, split, f"{stream}/mb"), 1, flat.size)
        kept = _unpack(editor, f"{stream}/k", _slice(editor, payload, split, encoded.payload.numel(), f"{stream}/kb"),
                       bits, encoded.kept)
        values = _scatter_kept(editor, stream, mask, _centered(editor, stream, kept, bits))
    else:
        values = _centered(editor, stream, _unpack(editor, stream, payload, bits, flat.size), bits)
    narrow = _node(editor, "Cast", [values], f"{stream}/i8", to=INT8)
    start = 0
    for name, codes in layers:
        part = narrow if len(layers) == 1 else _slice(editor, narrow, start, start + codes.size, f"{name}/part")
        shape = editor.set_initializer(f"{name}/shp", np.array(codes.shape, dtype=np.int64))
        _node(editor, "Reshape", [part, shape], name)
        start += codes.size


def _node(editor: GraphEditor, op: str, inputs: list[str], output: str, **attributes) -> str:
    """One unnamed node (folded away by ORT; a name would only add bytes to the file)."""
    editor.add_node(op, inputs, [output], "", **attributes)
    return output


def _slice(editor: GraphEditor, tensor: str, start: int, end: int, output: str) -> str:
    begin = editor.set_initializer(f"{output}/s", np.array([start], dtype=np.int64))
    stop = editor.set_initializer(f"{output}/e", np.array([end], dtype=np.int64))
    return _node(editor, "Slice", [tensor, begin, stop], output)


def _unpack(editor: GraphEditor, name: str, packed: str, bits: int, count: int) -> str:
    """int32 [count]: the unsigned ``bits``-bit values of the stream ``packed`` (uint8)."""
    shifts = editor.set_initializer(f"{SHARED}/shifts", np.arange(8, dtype=np.uint8))
    one = editor.set_initializer(f"{SHARED}/one", np.array(1, dtype=np.uint8))
    column = editor.set_initializer(f"{SHARED}/axis1", np.array([1], dtype=np.int64))
    rows = _node(editor, "Unsqueeze", [packed, column], f"{name}/r")
    shifted = _node(editor, "BitShift", [rows, shifts], f"{name}/sd", direction="RIGHT")
    stream = _node(editor, "BitwiseAnd", [shifted, one], f"{name}/b")
    flat = editor.set_initializer(f"{SHARED}/flat", np.array([-1], dtype=np.int64))
    stream = _node(editor, "Reshape", [stream, flat], f"{name}/st")
    stream = _slice(editor, stream, 0, count * bits, f"{name}/u")
    per_value = editor.set_initializer(f"{name}/pv", np.array([count, bits], dtype=np.int64))
    table = _node(editor, "Cast", [_node(editor, "Reshape", [stream, per_value], f"{name}/t")], f"{name}/t32", to=INT32)
    powers = editor.set_initializer(f"{SHARED}/powers{bits}", (1 << np.arange(bits)).astype(np.int32))
    weighted = _node(editor, "Mul", [table, powers], f"{name}/w")
    return _node(editor, "ReduceSum", [weighted, column], f"{name}/v", keepdims=0)


def _centered(editor: GraphEditor, name: str, unsigned: str, bits: int) -> str:
    offset = editor.set_initializer(f"{SHARED}/offset{bits}", np.array(-code_range(bits)[0], dtype=np.int32))
    return _node(editor, "Sub", [unsigned, offset], f"{name}/q")


def _scatter_kept(editor: GraphEditor, name: str, mask: str, kept: str) -> str:
    """codes_i = [0, kept…][mask_i · cumsum(mask)_i]."""
    axis = editor.set_initializer(f"{SHARED}/axis0", np.array(0, dtype=np.int32))
    zero = editor.set_initializer(f"{SHARED}/zero", np.zeros(1, dtype=np.int32))
    index = _node(editor, "Mul", [_node(editor, "CumSum", [mask, axis], f"{name}/rk"), mask], f"{name}/ix")
    table = _node(editor, "Concat", [zero, kept], f"{name}/wz", axis=0)
    return _node(editor, "Gather", [table, index], f"{name}/g", axis=0)
