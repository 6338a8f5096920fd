"""Parity on token outputs ([batch, tokens, classes]): top-1 agreement is a fraction of the argmax
positions (tokens), never above 1."""

from __future__ import annotations

import onnx
import torch
from torch import nn

from compress.backends.ort.parity import measure_parity
from compress.export.onnx_qdq import float_onnx


def test_token_outputs_agree_per_token(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(8, 5).eval()
    inputs = (torch.randn(2, 7, 8),)
    path = tmp_path / "tokens.onnx"
    onnx.save(float_onnx(model, inputs), str(path))
    parity = measure_parity(model, path, [inputs, (torch.randn(2, 7, 8),)])
    assert parity.top1_agreement == 1.0, parity.top1_agreement  # the float twin agrees on all 28 tokens
    assert parity.num_examples == 4
