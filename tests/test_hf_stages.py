"""Stages on a tiny GPT-2 loaded through hf:PATH with text data: the curvature operator's
Hessian-vector products of the next-token ce (through eager attention, the Conv1D layers turned
Linear and the tied head) equal plain double backward; int8 dynamic quantization of the Linear
layers exports to ONNX Runtime with dynamic batch and sequence axes and matches PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from compress.curvature.losses import cross_entropy
from compress.curvature.prepare import prepare_operator
from compress.data.builtin import sentence_texts
from compress.data.text import load_text
from compress.models.hf import build_hf_model
from compress.vocab.layers import tied_parameters
from tests.helpers.hf_tiny import save_model

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> tuple[nn.Module, object]:
    root = tmp_path_factory.mktemp("hf")
    folder = save_model("gpt2", root / "gpt2")
    text = root / "text.txt"
    text.write_text("\n".join(sentence_texts()[:12]), encoding="utf-8")
    return build_hf_model(folder), load_text(text, folder, "causal-lm", seq_len=8)


@pytest.mark.parametrize("product", ["reverse-over-reverse", "forward-over-reverse"])
def test_curvature_products_of_next_token_ce_equal_double_backward(gpt2, product: str) -> None:
    model, data = gpt2
    data = data.subset(range(4), "four blocks")
    operator = prepare_operator(model, data, "ce", batch_size=4, product=product)
    assert "model.transformer.h.0.attn.c_attn" in operator.layout.layers  # a Conv1D, now Linear
    vector = torch.randn(operator.dim, generator=torch.Generator().manual_seed(0))
    product_ours = operator.matvec(vector)

    names = operator.layout.names
    params = dict(model.named_parameters())
    loss = cross_entropy(model(*data.inputs), data.targets)
    gradients = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)
    tangent = operator.layout.unflatten(vector)
    directional = sum((g * tangent[n]).sum() for g, n in zip(gradients, names))
    expected = torch.cat([h.reshape(-1) for h in torch.autograd.grad(directional, [params[n] for n in names])])
    error = (product_ours - expected).norm() / expected.norm()
    assert error < 1e-4, f"relative error {error:.2e}"


def test_int8_dynamic_linear_layers_export_with_dynamic_batch_and_sequence(gpt2, tmp_path: Path) -> None:
    import copy

    from compress.export.onnx_qdq import export_onnx
    from compress.backends.ort.session import ort_session
    from compress.quant.quantize import quantize_model_
    from compress.quant.records import QuantSettings

    model, data = gpt2
    model = copy.deepcopy(model)
    blocks = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".h." in n]
    assert len(blocks) == 8
    settings = QuantSettings(weight_bits=8, act_bits=8, act_signed=False, act_dynamic=True)
    quantize_model_(model, {name: settings for name in blocks}, [])
    assert tied_parameters(model) == (("model.transformer.wte.weight", "model.lm_head.weight"),)
    path = export_onnx(model, tuple(x[:2] for x in data.inputs), tmp_path / "gpt2.onnx", "ort")
    session = ort_session(path, threads=1)
    for batch, length in [(3, 8), (1, 5)]:
        input_ids, attention_mask = (x[:batch, :length] for x in data.inputs)
        output = session.run(None, {"input": input_ids.numpy(), "input1": attention_mask.numpy()})[0]
        with torch.no_grad():
            expected = model(input_ids, attention_mask).numpy()
        assert output.shape == (batch, length, 96)
        assert np.abs(output - expected).max() < 1e-4
