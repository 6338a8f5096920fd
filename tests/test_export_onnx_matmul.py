"""Linear layers on 3-D inputs (a tiny transformer block with an attention mask) exported for ONNX
Runtime: dynamic int8 (DynamicQuantizeMatMul / MatMulIntegerToFloat) and 4-bit block-wise weights
(MatMulNBits), checked against the PyTorch fake-quant model and a float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compress.errors import ConfigError, InputError
from compress.export.onnx_qdq import export_onnx
from compress.backends.ort.fusion import check_fusion
from compress.backends.ort.session import ort_session
from compress.quant.blocks import block_codes, block_scales
from compress.quant.weights import weight_code_range
from compress.quant.fake import dynamic_fake_quantize
from compress.quant.quantize import quantize_model_, rebuild_quantized_, records_of
from compress.quant.records import QuantRecords, QuantSettings

onnx = pytest.importorskip("onnx")
LINEARS = ("query", "key", "value", "out", "up", "down")
DYNAMIC = QuantSettings(act_signed=False, act_dynamic=True)
INT4 = QuantSettings(weight_bits=4, act_bits=None, weight_block=32)


class TinyBlock(nn.Module):
    """Token embedding, one masked single-head attention layer and a GELU MLP, mean-pooled over the
    unmasked tokens — the shapes and mask handling of MiniLM in miniature."""

    def __init__(self, vocab: int = 50, width: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.query, self.key, self.value, self.out = (nn.Linear(width, width) for _ in range(4))
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        scores = self.query(x) @ self.key(x).transpose(1, 2) / x.shape[-1] ** 0.5
        scores = scores.masked_fill(mask[:, None, :] == 0, -1e4)
        x = self.norm(x + self.out(torch.softmax(scores, dim=-1) @ self.value(x)))
        x = x + self.down(nn.functional.gelu(self.up(x)))
        weights = mask[..., None].to(x.dtype)
        return (x * weights).sum(1) / weights.sum(1)


def _inputs(seed: int, batch: int = 4, tokens: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (batch, tokens), generator=generator)
    mask = torch.ones(batch, tokens, dtype=torch.long)
    mask[1, tokens // 2 :] = 0
    return ids, mask


def _quantized(settings: QuantSettings) -> nn.Module:
    torch.manual_seed(0)
    model = TinyBlock().eval()
    quantize_model_(model, {name: settings for name in LINEARS}, [])
    return model


def _ort_outputs(path, inputs) -> np.ndarray:
    session = ort_session(path)
    return session.run(None, {"input": inputs[0].numpy(), "input1": inputs[1].numpy()})[0]


@pytest.mark.parametrize("settings, fused", [(DYNAMIC, {"DynamicQuantizeMatMul": 3, "MatMulIntegerToFloat": 3}), (INT4, {"MatMulNBits": 6})], ids=["int8-dynamic", "int4-block32"])
def test_ort_matches_fake_quant_and_fuses(settings, fused, tmp_path) -> None:
    model = _quantized(settings)
    path = export_onnx(model, _inputs(0), tmp_path / "tiny.onnx", "ort")
    report = check_fusion(path)
    assert report.fused == fused and report.unfused_qdq == ()
    assert not [name for name in report.float_layers if "MatMul" not in name], report.float_layers
    for seed, tokens in ((1, 12), (2, 20)):  # the sequence axis is dynamic
        inputs = _inputs(seed, tokens=tokens)
        with torch.no_grad():
            expected = model(*inputs).numpy()
        error = np.abs(_ort_outputs(path, inputs) - expected).max()
        assert error < 1e-4 * np.abs(expected).max(), f"max |ORT - PyTorch| = {error:.2e}"


def test_dynamic_quantization_is_onnx_dynamic_quantize_linear() -> None:
    """dynamic_fake_quantize against ORT's own DynamicQuantizeLinear on a tensor with outliers."""
    from onnx import TensorProto, helper

    x = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(3)) * 2 + 0.5
    x[0, 0, 0] = 9.0
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "dql", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
    )  # fmt: skip
    import onnxruntime as ort

    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(dynamic_fake_quantize(x).numpy(), expected, rtol=0, atol=1e-6)


def test_block_codes_reconstruct_within_half_a_block_step() -> None:
    weight = torch.randn(8, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    weight[2, 40] = 30.0  # an outlier widens only its own block's step
    scales = block_scales(weight, 4, 32)
    codes = block_codes(weight, scales, 4)
    q_min, q_max = weight_code_range(4)
    assert scales.shape == (8, 3) and q_min <= codes.min() and codes.max() <= q_max and torch.equal(codes, codes.round())
    reconstructed = codes * scales.repeat_interleave(32, dim=1)
    steps = scales.repeat_interleave(32, dim=1)
    inside = (weight <= q_max * steps) & (weight >= q_min * steps)  # within the (clipped) range: at most half a step off
    assert ((reconstructed - weight).abs()[inside] <= steps[inside] / 2 + 1e-12).all()
    blocks = weight.reshape(8, 3, 32)
    unclipped = torch.maximum(blocks.amax(dim=2) / q_max, blocks.amin(dim=2) / q_min)  # α = 1: both ends reached
    error = (reconstructed - weight).pow(2).reshape(8, 3, 32).sum(dim=2)
    error_unclipped = (block_codes(weight, unclipped, 4) * unclipped.repeat_interleave(32, dim=1)
                       - weight).pow(2).reshape(8, 3, 32).sum(dim=2)
    assert (error <= error_unclipped + 1e-12).all()  # the clip is chosen to minimise the error
    assert 30.0 / (2 * q_max) <= float(scales[2, 1]) <= 30.0 / q_max and float(scales[2, 0]) < 1.0


def test_records_rebuild_dynamic_and_block_layers() -> None:
    model = _quantized(INT4)
    records = QuantRecords.from_dict(records_of(model, ()).to_dict())
    rebuilt = rebuild_quantized_(TinyBlock(), records)
    rebuilt.load_state_dict(model.state_dict())
    inputs = _inputs(5)
    with torch.no_grad():
        assert torch.equal(rebuilt(*inputs), model(*inputs))
    assert len(records.layers["up"].weight_scales) == 128 * 2


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(act_dynamic=True), "act_signed false"),
        (dict(weight_block=24, act_bits=None), "power of two"),
        (dict(weight_block=32), "float activations"),
    ],
)
def test_settings_errors(settings, message) -> None:
    with pytest.raises(ConfigError, match=message):
        QuantSettings(**settings)


def test_block_weights_need_linear_with_whole_blocks() -> None:
    model = TinyBlock(width=48)
    with pytest.raises(ConfigError, match="not a multiple of weight_block 32"):
        quantize_model_(model, {"query": INT4}, [])
