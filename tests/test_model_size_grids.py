"""``model_size`` counts a quantized weight's whole grid as the checkpoint stores it: one fp32 scale
per block of a row with ``weight_block`` (not one per row), and an fp32 zero point per block of
asymmetric blocks; checked against the bytes ``write_packed_state`` actually writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from compress.evaluation import model_size
from compress.pack.state import write_packed_state
from compress.quant.quantize import quantize_model_
from compress.quant.records import QuantSettings

WIDTH, BLOCK = 256, 16
GRIDS = {
    "per channel": QuantSettings(weight_bits=4, act_bits=None, method="rtn"),
    "blocks": QuantSettings(weight_bits=4, act_bits=None, weight_block=BLOCK, method="rtn"),
    "asymmetric blocks": QuantSettings(weight_bits=4, act_bits=None, weight_block=BLOCK, symmetric=False, method="rtn"),
    "asymmetric blocks, held": QuantSettings(weight_bits=4, act_bits=None, weight_block=BLOCK, symmetric=False),
    "learned scales": QuantSettings(weight_bits=4, act_bits=None, learnable_scales=True, method="rtn"),
}


def _quantized(settings: QuantSettings) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 8))
    if settings.method == "gptq":  # scales and zero points held fixed, as a reconstruction leaves them
        from compress.quant.blocks import asymmetric_block_grid

        scales, zeros = asymmetric_block_grid(model[0].weight.detach(), 4, BLOCK)[:2]
        quantize_model_(model, {"0": settings}, [torch.randn(4, WIDTH)], {"0": scales}, {"0": zeros})
    else:
        quantize_model_(model, {"0": settings}, [torch.randn(4, WIDTH)])
    return model


@pytest.mark.parametrize("grid", GRIDS)
def test_model_size_is_the_packed_files_tensor_bytes(grid: str, tmp_path: Path) -> None:
    model = _quantized(GRIDS[grid])
    size = write_packed_state(tmp_path / "w.safetensors", model)
    _, megabytes = model_size(model)
    assert megabytes * 1e6 == pytest.approx(size.tensor_bytes - size.header_bytes, abs=8), grid


def test_blocks_count_a_scale_per_block() -> None:
    per_channel = model_size(_quantized(GRIDS["per channel"]))[1]
    blocks = model_size(_quantized(GRIDS["blocks"]))[1]
    asymmetric = model_size(_quantized(GRIDS["asymmetric blocks"]))[1]
    extra_scales = WIDTH * (WIDTH // BLOCK - 1) * 4  # fp32 bytes beyond one scale per row
    assert (blocks - per_channel) * 1e6 == pytest.approx(extra_scales)
    assert (asymmetric - blocks) * 1e6 == pytest.approx(WIDTH * WIDTH // BLOCK * 4)  # a zero point per block
