"""Edits of an ONNX graph: initializers, Q/DQ insertion on tensors, producer/consumer lookup,
and a final topological sort (insertions append nodes; the sort restores a valid order)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

# Ops through which a quantized tensor stays on its grid: Q commutes with them (monotone, Q(0) = 0,
# or pure data movement), so a Q/DQ pair with the same parameters may follow them exactly.
GRID_PRESERVING = ("Relu", "MaxPool", "Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze", "Transpose")


INT4_BITS = 4  # codes of at most this many bits are stored as ONNX INT4 (opset 21)
FLOAT, INT8 = 1, 3  # onnx.TensorProto element types, without importing onnx


class GraphEditor:
    """A mutable view of ``graph`` with tensor → producer / consumers maps kept up to date."""

    def __init__(self, graph: "onnx.GraphProto"):
        self.graph = graph
        self.domains: set[str] = set()  # contrib op domains the edits use (the model must import them)
        self.initializers = {init.name: init for init in graph.initializer}
        self.packed: dict[tuple[int, bool], list[tuple[str, np.ndarray]]] = {}  # (bits, masked) -> codes to write
        self.producer = {out: node for node in graph.node for out in node.output}
        self.node_names = {node.name for node in graph.node if node.name}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def set_initializer(self, name: str, array: np.ndarray) -> str:
        """Add or replace the initializer ``name`` with ``array``."""
        from onnx import numpy_helper

        return self._put(numpy_helper.from_array(array, name))

    def _put(self, tensor: "onnx.TensorProto") -> str:
        if tensor.name in self.initializers:
            self.initializers[tensor.name].CopyFrom(tensor)
        else:
            self.graph.initializer.append(tensor)
            self.initializers[tensor.name] = self.graph.initializer[-1]
        return tensor.name

    def set_codes(self, name: str, codes: np.ndarray, bits: int, compact: bool) -> str:
        """Integer weight codes under the name ``name`` (an initializer, or the tensor decoded from
        packed bytes); returns the int8 tensor of the codes.
        Not ``compact``: plain int8. ``compact`` (the file at its real size, for ONNX Runtime):
        the packed bytes of ``compress.pack.codes`` (any width; zeros as a keep-mask where
        smaller) where they are smaller than the codes in an ONNX type, held back until
        ``write_packed_codes`` writes every such layer of one width and form (dense or masked) as
        one stream with one decoding graph (``unpack_graph``); else codes of ≤ 4 bits as an ONNX INT4 tensor (opset
        21; two per byte, low nibble first) read through Cast(to INT8), wider ones as int8.
        ONNX Runtime constant-folds a Cast or any graph of initializers when the session starts
        (unlike a DequantizeLinear, which it keeps so as to fuse it), so its Q/DQ fusions see
        an int8 initializer either way."""
        if not compact:
            return self.set_initializer(name, codes.astype(np.int8))
        import torch

        from compress.pack.codes import encode_codes

        encoded = encode_codes(torch.from_numpy(codes.astype(np.int64)), bits)
        native = codes.size // 2 + codes.size % 2 if bits <= INT4_BITS else codes.size
        if encoded.payload.numel() < native:  # ``name`` becomes the decoded codes' tensor
            self.remove_initializer(name)
            self.packed.setdefault((bits, encoded.masked), []).append((name, codes))
            return name
        if bits > INT4_BITS:
            return self.set_initializer(name, codes.astype(np.int8))
        from onnx import TensorProto, helper

        from compress.pack.bits import pack_bits

        nibbles = torch.from_numpy(codes.astype(np.int64).reshape(-1) & 0xF)
        self._put(helper.make_tensor(name, TensorProto.INT4, codes.shape, pack_bits(nibbles, 4).numpy().tobytes(), raw=True))
        widened = f"{name}/int8"
        self.add_node("Cast", [name], [widened], "", to=INT8)
        return widened

    def remove_initializer(self, name: str) -> None:
        if self.initializers.pop(name, None) is not None:
            index = next(i for i, init in enumerate(self.graph.initializer) if init.name == name)
            del self.graph.initializer[index]

    def write_packed_codes(self) -> None:
        """Write the codes ``set_codes`` held back: per bit width and form, one packed stream and
        its decoding graph (``unpack_graph.set_packed_codes``)."""
        from .unpack_graph import set_packed_codes

        for (bits, _), layers in sorted(self.packed.items()):
            set_packed_codes(self, layers, bits)
        self.packed.clear()

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.initializers[name])

    def add_node(self, op_type: str, inputs: list[str], outputs: list[str], name: str, **attributes) -> None:
        from onnx import helper

        if name in self.node_names:  # node names stay unique: name, name#2, name#3, …
            name = next(f"{name}#{k}" for k in range(2, len(self.node_names) + 3) if f"{name}#{k}" not in self.node_names)
        if name:
            self.node_names.add(name)
        node = helper.make_node(op_type, inputs, outputs, name=name, **attributes)
        self.graph.node.append(node)
        node = self.graph.node[-1]
        for out in outputs:
            self.producer[out] = node
        for tensor in inputs:
            self.consumers.setdefault(tensor, []).append(node)

    def remove_node(self, node) -> None:
        """Delete ``node``; its output tensors must no longer be read (rewire first)."""
        for tensor in node.input:
            self.consumers[tensor] = [n for n in self.consumers.get(tensor, []) if n != node]
        for tensor in node.output:
            self.producer.pop(tensor, None)
        index = next(i for i, n in enumerate(self.graph.node) if n == node)
        del self.graph.node[index]

    def rewire(self, tensor: str, replacement: str, only: list | None = None) -> None:
        """Make the consumers of ``tensor`` (or just those in ``only``) read ``replacement``."""
        targets = self.consumers.get(tensor, []) if only is None else only
        for node in list(targets):
            for index, name in enumerate(node.input):
                if name == tensor:
                    node.input[index] = replacement
            self.consumers[tensor].remove(node)
            self.consumers.setdefault(replacement, []).append(node)

    def insert_qdq(self, tensor: str, scale: str, zero_point: str, label: str, only: list | None = None, axis: int | None = None) -> str:
        """tensor → QuantizeLinear → DequantizeLinear → (its consumers, or ``only`` those); returns
        the dequantized tensor's name."""
        consumers = list(self.consumers.get(tensor, [])) if only is None else only
        quantized, dequantized = f"{tensor}/{label}/q", f"{tensor}/{label}/dq"
        extra = {} if axis is None else {"axis": axis}
        self.add_node("QuantizeLinear", [tensor, scale, zero_point], [quantized], f"{label}/Q", **extra)
        self.rewire(tensor, dequantized, consumers)
        self.add_node("DequantizeLinear", [quantized, scale, zero_point], [dequantized], f"{label}/DQ", **extra)
        return dequantized

    def sort(self) -> None:
        """Reorder the nodes topologically (Kahn's algorithm, stable in the current order)."""
        available = {i.name for i in self.graph.input} | set(self.initializers) | {""}
        pending, ordered = list(self.graph.node), []
        while pending:
            ready = [n for n in pending if all(name in available for name in n.input)]
            if not ready:
                raise RuntimeError("ONNX graph has a cycle or a dangling input after Q/DQ insertion")
            for node in ready:
                available.update(node.output)
            ordered.extend(ready)
            pending = [n for n in pending if all(name not in available for name in n.output)]
        copies = [type(node)() for node in ordered]
        for copy, node in zip(copies, ordered):
            copy.CopyFrom(node)
        del self.graph.node[:]
        self.graph.node.extend(copies)
