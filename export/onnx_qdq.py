"""Export a fake-quantized model (``compress.quant.quantize_model_``) as Q/DQ ONNX (opset 21 for
ONNX Runtime, 17 for TensorRT).

The float twin of the model (quantized layers swapped back to plain Conv2d/Linear sharing their
weights) is exported with its parameter names; then, per quantized layer (found by its weight
initializer ``<layer>.weight``):

- weight: the initializer becomes the codes round(W/s_c) ∈ ``weight_code_range(b)`` (same name)
  feeding DequantizeLinear, per channel, axis 0 (Conv [O, I, kh, kw]; Gemm with transB=1 [O, I]), its
  zero point left to the default 0 where ORT allows (not on Gemm, nor for TensorRT). For
  ``ort`` the codes are stored at their real size (``GraphEditor.set_codes``: INT4, or packed
  bytes of any width with a keep-mask where smaller) and widened to int8 by a Cast or a small
  decoding graph that ORT constant-folds at session start, so it still fuses the int8
  DequantizeLinear (it does not fuse an INT4 DequantizeLinear into QLinearConv; checked on ORT
  1.32): the file at its real size, the kernel unchanged;
- weight-only layers (float activations), ``weight_only="fold"`` (the ``ort`` default): codes →
  Cast(to FLOAT) → Mul(s_c) instead of DequantizeLinear. ORT constant-folds it into a float
  weight at session start, so the layer runs at float speed while the file keeps the codes: a
  size option only on ORT (``float_at_runtime`` names these layers). ``"dequantize"`` keeps the
  DequantizeLinear, which ORT does NOT fold and runs on every call (DESIGN §4: 0.18× FP32 on a
  small CNN); TensorRT reads weight-only layers that way, so it is the ``tensorrt`` form;
- bias (target ``ort``): int32 codes on the grid s_in·s_w,c + DequantizeLinear (QLinearConv/QGemm
  need it), whose scale the graph computes as Mul(s_in, s_w,c), which ORT folds at session start
  (the file holds each scale once); target ``tensorrt``: the float value of the fake-quantized bias;
- its input quantizer: Q→DQ on the input, moved back through single-consumer layout ops
  (Flatten, Reshape; ReLU only when the ReLU cannot be absorbed, see below; never MaxPool);
- its output quantizer: Q→DQ after the layer, or after its ReLU: for uint8 with zero point 0 ONNX
  Runtime deletes a ReLU that feeds Q (ReluQuantFusion), and TensorRT fuses Conv+ReLU+Q; for
  signed int8 on ``ort`` the Q goes before the ReLU, because x86 ORT fuses int8 Conv only when Q
  follows it directly;
- finally Q→DQ pairs with the same parameters are repeated after every grid-preserving op fed by
  a DequantizeLinear, so MaxPool/Flatten run on integers and consumers (Add) see DQ inputs.

The graph is then written compactly (``export.compact_graph``: short tensor names but the model's
parameter names, so ``<layer>.weight`` is still the layer's codes; merged constants; no default
attributes): what the file holds beyond its initializers is the graph's structure, not its names.

Layers with ``act_dynamic`` or ``weight_block`` (Linear, any input rank) become integer MatMuls
instead (``export.matmul_qdq``). A bias-free Linear on 2-D inputs (a low-rank factor), which torch
writes as MatMul(x, Transpose(W)), is first rewritten as Gemm(x, W, transB=1).

Every insertion computes exactly what the PyTorch fake-quant model computes, because Q commutes
with the ops it is moved across (see ``compress.quant.placement``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from compress.atomic import atomic_path
from compress.errors import InputError
from compress.quant.modules import QuantLayer
from compress.quant.quantize import records_of
from compress.quant.records import ActRecord, LayerRecord
from compress.quant.weights import quantize_per_channel

from .compact_graph import compact_graph
from .matmul_qdq import quantize_matmul_layer
from .qdq_graph import FLOAT, GRID_PRESERVING, GraphEditor

if TYPE_CHECKING:
    import onnx

TARGETS = ("ort", "tensorrt")
OPSETS = {"ort": 21, "tensorrt": 17}  # 21: INT4 tensors; TensorRT gets int8 codes at the opset it has long read
WEIGHT_ONLY_FORMS = ("fold", "dequantize")
DEFAULT_WEIGHT_ONLY = {"ort": "fold", "tensorrt": "dequantize"}
FLOAT_AT_RUNTIME_KEY = "compress.float_at_runtime"


def export_onnx(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | Path, target: str = "ort",
    weight_only: str | None = None,
) -> Path:
    """Write ``model`` (fake-quantized in place by ``quantize_model_``) as Q/DQ ONNX to ``path``;
    ``weight_only`` (``fold`` | ``dequantize``, default per target) is the form of weight-only
    layers (module docstring)."""
    import onnx

    if target not in TARGETS:
        raise InputError(f"unknown export target {target!r}; choose one of {', '.join(TARGETS)}")
    weight_only = weight_only or DEFAULT_WEIGHT_ONLY[target]
    if weight_only not in WEIGHT_ONLY_FORMS or (target == "tensorrt" and weight_only != "dequantize"):
        raise InputError(f"weight_only {weight_only!r} is not a form for target {target}; choose "
                         f"{'dequantize' if target == 'tensorrt' else ' or '.join(WEIGHT_ONLY_FORMS)}")
    layers = records_of(model, ()).layers
    if not layers:
        raise InputError("the model has no quantized layers; run quantize_model_ (compress apply) first")
    if target == "tensorrt":
        _check_tensorrt_compatible(layers)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    proto = float_onnx(model, example_inputs, OPSETS[target])
    editor = GraphEditor(proto.graph)
    folded = []
    for name, record in layers.items():
        if record.settings.act_dynamic or record.settings.weight_block is not None:
            quantize_matmul_layer(editor, name, model.get_submodule(name))
            continue
        fold = weight_only == "fold" and record.settings.act_bits is None
        _quantize_layer(editor, name, record, model.get_submodule(name), target, fold)
        folded += [name] if fold else []
    editor.write_packed_codes()
    _propagate_grids(editor)
    editor.sort()
    proto.opset_import.extend(onnx.helper.make_opsetid(domain, 1) for domain in sorted(editor.domains))
    if folded:
        onnx.helper.set_model_props(proto, {FLOAT_AT_RUNTIME_KEY: ",".join(folded)})
    compact_graph(proto, keep=[name for name, _ in model.named_parameters()])  # the codes keep their weight's name
    onnx.checker.check_model(proto)
    with atomic_path(path) as partial:
        onnx.save(proto, partial)
    return path


def float_at_runtime(path: str | Path) -> tuple[str, ...]:
    """The layers of an exported file that ONNX Runtime runs in float (weight-only layers in the
    ``fold`` form: stored as codes, a size option only)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return tuple(name for name in props.get(FLOAT_AT_RUNTIME_KEY, "").split(",") if name)


def float_onnx(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], opset: int = OPSETS["ort"]) -> "onnx.ModelProto":
    """The float twin of ``model`` as ONNX (``opset``); initializers keep the parameter names."""
    import io

    import onnx

    twin = _float_twin(model)
    names = [f"input{i}" if i else "input" for i in range(len(example_inputs))]
    axes = {name: _dynamic_axes(x) for name, x in zip(names, example_inputs)} | {"output": {0: "batch"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            twin, tuple(example_inputs), buffer, dynamo=False, opset_version=opset,
            do_constant_folding=False, input_names=names, output_names=["output"],
            dynamic_axes=axes,
        )  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


def _dynamic_axes(example: torch.Tensor) -> dict[int, str]:
    """Batch is dynamic; so is the sequence axis (1) of integer inputs (token ids, masks)."""
    if example.ndim >= 2 and not example.is_floating_point():
        return {0: "batch", 1: "sequence"}
    return {0: "batch"}


def _float_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose quantized layers are plain Conv2d/Linear with the same weights."""
    import copy

    twin = copy.deepcopy(model).eval()
    for name, module in list(twin.named_modules()):
        if isinstance(module, nn.Conv2d) and isinstance(module, QuantLayer):
            plain = nn.Conv2d(
                module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                module.dilation, module.groups, module.bias is not None, module.padding_mode,
            )  # fmt: skip
        elif isinstance(module, QuantLayer):
            plain = nn.Linear(module.in_features, module.out_features, module.bias is not None)
        else:
            continue
        plain.weight, plain.bias = module.weight, module.bias
        twin.set_submodule(name, plain)
    return twin


def _check_tensorrt_compatible(layers: dict[str, LayerRecord]) -> None:
    for name, record in layers.items():
        if record.settings.act_dynamic or record.settings.weight_block is not None:
            raise InputError(f"{name} uses act_dynamic or weight_block, which export for ONNX Runtime only (target ort)")
        if record.settings.act_bits is not None and not record.settings.act_signed:
            raise InputError(f"{name} has asymmetric uint8 activations; TensorRT needs act_signed (zero point 0)")


def _layer_node(editor: GraphEditor, name: str):
    """The Conv/Gemm node reading the layer's weight (a bias-free 2-D MatMul rewritten as Gemm), or
    None (a Linear on N-D inputs: Transpose → MatMul)."""
    weight = f"{name}.weight"
    for node in editor.consumers.get(weight, []):
        if node.op_type in ("Conv", "Gemm") and node.input[1] == weight:
            if node.op_type == "Gemm" and not _attribute(node, "transB", 0):
                raise InputError(f"{name}: Gemm without transB is not supported by the Q/DQ exporter")
            return node
    return _bias_free_gemm(editor, weight)


def _bias_free_gemm(editor: GraphEditor, weight: str):
    """A bias-free Linear on 2-D inputs (a low-rank factor, ``compress.lowrank``) exports as
    MatMul(x, Transpose(W)); rewritten as Gemm(x, W, transB=1), the same product, it quantizes like
    any other Linear. None where the pattern is not there or x is not 2-D (Gemm is 2-D only)."""
    import onnx

    for transpose in editor.consumers.get(weight, []):
        users = editor.consumers.get(transpose.output[0], [])
        if transpose.op_type != "Transpose" or len(users) != 1 or users[0].op_type != "MatMul" \
                or list(users[0].input[1:]) != [transpose.output[0]]:
            continue
        matmul = users[0]
        inferred = onnx.shape_inference.infer_shapes(onnx.helper.make_model(editor.graph))
        shapes = {v.name: v.type.tensor_type.shape for v in [*inferred.graph.value_info, *inferred.graph.input]}
        if matmul.input[0] not in shapes or len(shapes[matmul.input[0]].dim) != 2:
            return None
        editor.remove_node(matmul)
        editor.remove_node(transpose)
        editor.add_node("Gemm", [matmul.input[0], weight], list(matmul.output), f"{matmul.name}/Gemm", transB=1)
        return editor.producer[matmul.output[0]]
    return None


def _attribute(node, key: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == key), default)


def _quantize_layer(editor: GraphEditor, name: str, record: LayerRecord, layer: QuantLayer, target: str, fold: bool) -> None:
    node = _layer_node(editor, name)
    if node is None and fold and record.input is None and record.output is None:
        _fold_weight_only(editor, name, record, layer, target)
        return
    if node is None:
        raise InputError(f"{name}: no Conv/Gemm node reads {name}.weight in the exported graph (a Linear on N-D inputs "
                         f"exports as MatMul: give it act_dynamic, weight_block or float activations)")
    relu_transparent = target == "ort" and record.settings.act_signed
    if record.input is not None:
        scale, zero_point = _act_initializers(editor, f"{name}.input_quantizer", record.input)
        origin = _walk_back(editor, node.input[0], relu_transparent)
        if target == "ort":
            origin = _pool_before_relu(editor, origin)
        only = [node] if origin == node.input[0] else None
        editor.insert_qdq(origin, scale, zero_point, f"{name}.input_quantizer", only=only)
    if record.weight_scales is not None:
        _quantize_weight(editor, name, node, record, layer, target, fold)
    if layer.bias is not None:
        _write_bias(editor, name, node, layer, target)
    if record.output is not None:
        scale, zero_point = _act_initializers(editor, f"{name}.output_quantizer", record.output)
        tensor = node.output[0]
        consumers = editor.consumers.get(tensor, [])
        if record.output.observe_relu and not relu_transparent and len(consumers) == 1 and consumers[0].op_type == "Relu":
            tensor = consumers[0].output[0]
        editor.insert_qdq(tensor, scale, zero_point, f"{name}.output_quantizer")


def _act_initializers(editor: GraphEditor, prefix: str, record: ActRecord) -> tuple[str, str]:
    """Scale (float32) and zero point (int8 or uint8) initializers named like the state dict."""
    dtype = np.int8 if record.signed else np.uint8
    scale = editor.set_initializer(f"{prefix}.scale", np.array(record.scale, dtype=np.float32))
    zero_point = editor.set_initializer(f"{prefix}.zero_point", np.array(record.zero_point, dtype=dtype))
    return scale, zero_point


def _walk_back(editor: GraphEditor, tensor: str, relu_transparent: bool) -> str:
    """Move back through grid-preserving producers while each tensor has a single consumer, but
    never across a MaxPool: a float MaxPool runs in ORT's fast NCHWc layout and quantizing after it
    touches 1/4 of the values, while a uint8 MaxPool fed by a float producer runs in NCHW (measured
    on mnist-cnn with a float stem: 1.2 ms vs 0.03 ms at batch 32)."""
    movable = set(GRID_PRESERVING) - {"MaxPool"} - (set() if relu_transparent else {"Relu"})
    while len(editor.consumers.get(tensor, [])) == 1:
        producer = editor.producer.get(tensor)
        if producer is None or producer.op_type not in movable:
            break
        tensor = producer.input[0]
    return tensor


def _pool_before_relu(editor: GraphEditor, tensor: str) -> str:
    """Relu → MaxPool → ``tensor`` becomes MaxPool → Relu → ``tensor`` (exact: max-pooling commutes
    with any non-decreasing elementwise map, and its padding is −∞). Then the input Q reads the
    Relu, which ORT folds into it (uint8, zero point 0) and cannot propagate back across
    (QDQPropagationTransformer would otherwise move Q before the MaxPool and run a slow NCHW
    uint8 MaxPool on 4× more values: 1.2 ms vs 0.03 ms at batch 32 on mnist-cnn's float stem)."""
    pool = editor.producer.get(tensor)
    if pool is None or pool.op_type != "MaxPool" or len(editor.consumers.get(pool.input[0], [])) != 1:
        return tensor
    relu = editor.producer.get(pool.input[0])
    if relu is None or relu.op_type != "Relu":
        return tensor
    source, middle = relu.input[0], relu.output[0]
    editor.consumers[source] = [pool if n is relu else n for n in editor.consumers[source]]
    pool.input[0], pool.output[0], relu.input[0], relu.output[0] = source, middle, middle, tensor
    editor.producer[middle], editor.producer[tensor] = pool, relu
    editor.consumers[middle] = [relu]
    return tensor


def _fold_weight_only(editor: GraphEditor, name: str, record: LayerRecord, layer: QuantLayer, target: str) -> None:
    """A weight-only layer in the ``fold`` form with no Conv/Gemm node (a Linear on token inputs:
    Transpose → MatMul): whatever reads the weight reads Cast(codes) · s_c instead, which ONNX
    Runtime folds to a float constant at session start; the bias stays float."""
    if record.weight_scales is not None:
        _quantize_weight(editor, name, None, record, layer, target, fold=True)
    if layer.bias is not None:
        with torch.no_grad():
            editor.set_initializer(f"{name}.bias", layer.quantized_bias().detach().float().numpy())


def _quantize_weight(editor: GraphEditor, name: str, node, record: LayerRecord, layer: QuantLayer, target: str, fold: bool) -> None:
    """The codes under the weight's own name (at their real size for ``ort``:
    ``GraphEditor.set_codes``), then per-channel (axis 0) DequantizeLinear, or with ``fold``
    Cast(to FLOAT) · s_c; read by ``node`` (None: by every reader of the weight). The zero point
    (0) is left to its default for ``ort`` except on Gemm, which ORT 1.32 fuses into QGemm only
    with B's zero point given; ``tensorrt`` always gets it (its parsers' long-standing form)."""
    bits = record.settings.weight_bits
    scales = layer.weight_scales().detach().float()
    codes = quantize_per_channel(layer.weight.detach().float(), scales, bits)
    dequantized = f"{name}.weight/dq"
    editor.rewire(f"{name}.weight", dequantized, None if node is None else [node])
    weight = editor.set_codes(f"{name}.weight", codes.numpy(), bits, compact=target == "ort")
    if fold:
        shape = (-1,) + (1,) * (codes.ndim - 1)
        scale = editor.set_initializer(f"{name}.weight_scale", scales.numpy().reshape(shape))
        real = f"{name}.weight/float"
        editor.add_node("Cast", [weight], [real], "", to=FLOAT)
        editor.add_node("Mul", [real, scale], [dequantized], "")
        return
    inputs = [weight, editor.set_initializer(f"{name}.weight_scale", scales.numpy())]
    if target == "tensorrt" or (node is not None and node.op_type == "Gemm"):
        inputs.append(editor.set_initializer(f"{name}.weight_zero_point", np.zeros(len(scales), dtype=np.int8)))
    editor.add_node("DequantizeLinear", inputs, [dequantized], f"{name}.weight/DQ", axis=0)


def _write_bias(editor: GraphEditor, name: str, node, layer: QuantLayer, target: str) -> None:
    """ort: int32 codes round(b / (s_in·s_w,c)) + DequantizeLinear (zero point 0 by default), its
    scale computed in the graph as Mul(s_in, s_w,c) in float32, as ``bias_scales`` computes it (so
    bit-equal; ORT folds it at session start): the file holds no second copy of the scales;
    tensorrt: the float fake-quantized bias."""
    with torch.no_grad():
        scales = layer.bias_scales()
        if scales is None or target == "tensorrt":
            editor.set_initializer(f"{name}.bias", layer.quantized_bias().detach().float().numpy())
            return
        codes = torch.round(layer.bias.detach() / scales)
        input_scale = np.array(float(layer.input_scale), dtype=np.float32)
    if codes.abs().max() >= 2**31:
        raise InputError(f"{name}: bias does not fit int32 on the grid s_in*s_w; the input or weight scale is too small")
    bias = editor.set_initializer(f"{name}.bias", codes.numpy().astype(np.int32))
    scale = f"{name}.bias_scale"
    inputs = [editor.set_initializer(f"{name}.input_scale", input_scale), f"{name}.weight_scale"]
    editor.add_node("Mul", inputs, [scale], "")
    dequantized = f"{name}.bias/dq"
    editor.rewire(bias, dequantized, [node])
    editor.add_node("DequantizeLinear", [bias, scale], [dequantized], f"{name}.bias/DQ", axis=0)


def _propagate_grids(editor: GraphEditor) -> None:
    """After every grid-preserving op fed by a DequantizeLinear, repeat that Q→DQ (same params)."""
    for node in list(editor.graph.node):
        if node.op_type not in GRID_PRESERVING:
            continue
        source = editor.producer.get(node.input[0])
        if source is None or source.op_type != "DequantizeLinear":
            continue
        consumers = editor.consumers.get(node.output[0], [])
        if consumers and all(c.op_type == "QuantizeLinear" for c in consumers):
            continue
        label = source.name.split("/")[0]
        editor.insert_qdq(node.output[0], source.input[1], source.input[2], label)
