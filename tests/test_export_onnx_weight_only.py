"""Weight-only layers exported for ONNX Runtime: the ``fold`` form (codes → Cast → Mul) that ORT
constant-folds into float weights at session start, so a weight-only layer never runs slower than
float, against the DequantizeLinear form that ORT keeps and runs on every call (DESIGN §4)."""

from __future__ import annotations

import pytest
import torch

from compress.data.spec import load_data
from compress.errors import InputError
from compress.export.onnx_qdq import export_onnx, float_at_runtime
from compress.backends.ort.fusion import check_fusion
from compress.backends.ort.parity import measure_parity
from compress.models.spec import build_model
from compress.quant.quantize import quantize_model_
from compress.quant.records import QuantSettings
from tests.helpers.onnx_codes import code_storage

onnx = pytest.importorskip("onnx")
LAYERS = ("stem.0", "conv.0", "block.dw.0", "block.pw.0", "head")


def _weight_only(bits: int) -> torch.nn.Module:
    model = build_model("builtin:mnist-cnn")
    quantize_model_(model, dict.fromkeys(LAYERS, QuantSettings(weight_bits=bits, act_bits=None)), [])
    return model


@pytest.fixture(scope="module")
def heldout():
    return load_data("builtin:mnist5k", "heldout", "heldout")


@pytest.mark.parametrize("bits", [8, 4])
def test_fold_form_runs_float_weights_with_parity(bits: int, tmp_path, heldout) -> None:
    model = _weight_only(bits)
    path = export_onnx(model, (heldout.inputs[0][:1],), tmp_path / "model.onnx", "ort")
    parity = measure_parity(model, path, [batch.inputs for batch in heldout.batches(500)])
    assert parity.max_error_steps <= 1.0, f"max error {parity.max_error_steps:.3f} output steps"
    assert parity.top1_agreement >= 0.999, f"top-1 agreement {parity.top1_agreement:.4f}"
    assert float_at_runtime(path) == LAYERS
    proto = onnx.load(str(path))
    for name in LAYERS:
        # <= 4 bits: INT4, or the packed codes with a keep-mask where that is smaller (GPTQ leaves many zeros)
        allowed = (onnx.TensorProto.INT4, onnx.TensorProto.UINT8) if bits <= 4 else (onnx.TensorProto.INT8,)
        assert code_storage(proto, name).data_type in allowed
    report = check_fusion(path)
    optimized = onnx.load(report.optimized).graph
    assert not [n.op_type for n in optimized.node if n.op_type in ("Cast", "Mul", "DequantizeLinear", "QuantizeLinear")]
    assert len(report.float_layers) == len(LAYERS) and report.fused == {}


def test_dequantize_form_is_kept_by_ort(tmp_path, heldout) -> None:
    """Why ``fold`` is the ORT default: ORT leaves a weight's DequantizeLinear in the graph."""
    model = _weight_only(8)
    path = export_onnx(model, (heldout.inputs[0][:1],), tmp_path / "model.onnx", "ort", weight_only="dequantize")
    assert float_at_runtime(path) == ()
    report = check_fusion(path)
    assert len([name for name in report.unfused_qdq if "weight" in name]) == len(LAYERS)


def test_weight_only_form_must_suit_the_target(tmp_path, heldout) -> None:
    model = _weight_only(8)
    with pytest.raises(InputError, match="not a form for target tensorrt"):
        export_onnx(model, (heldout.inputs[0][:1],), tmp_path / "m.onnx", "tensorrt", weight_only="fold")
    with pytest.raises(InputError, match="not a form for target ort"):
        export_onnx(model, (heldout.inputs[0][:1],), tmp_path / "m.onnx", "ort", weight_only="float")


@pytest.mark.parametrize("bits", [4, 3])
def test_per_channel_weight_only_linears_on_token_inputs_fold_too(bits: int, tmp_path) -> None:
    """A tiny Llama's Linear layers read [batch, tokens, features] and export as Transpose → MatMul,
    not Gemm: per-channel weight-only codes fold all the same (what an hf: plan writes), the codes
    at their real size and the outputs those of the PyTorch model."""
    pytest.importorskip("transformers")
    from compress.data.builtin import sentence_texts
    from compress.data.text import load_text
    from compress.models.hf import build_hf_model
    from tests.helpers.hf_tiny import save_model

    folder = save_model("llama", tmp_path / "llama")
    text = tmp_path / "text.txt"
    text.write_text("\n".join(sentence_texts()[:16]), encoding="utf-8")
    model = build_hf_model(folder)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    quantize_model_(model, dict.fromkeys(linears, QuantSettings(weight_bits=bits, act_bits=None)), [])
    data = load_text(text, folder, "causal-lm", seq_len=8)
    batches = [batch.inputs for batch in data.batches(8)]
    path = export_onnx(model, batches[0], tmp_path / "model.onnx", "ort")
    assert set(float_at_runtime(path)) == set(linears)
    proto = onnx.load(str(path))
    weights = sum(model.get_submodule(n).weight.numel() for n in linears)
    storages = {code_storage(proto, n).name: code_storage(proto, n) for n in linears}  # a packed stream is shared
    code_bytes = sum(len(init.raw_data) for init in storages.values())
    assert code_bytes <= weights * bits / 8 * 1.05  # codes at their bit width, not float or int8
    with torch.no_grad():
        expected = torch.cat([model(*b) for b in batches])
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = torch.cat([torch.from_numpy(session.run(None, dict(zip(names, (x.numpy() for x in b))))[0])
                     for b in batches])
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
