"""Quality floors on builtin:mnist-cnn (held-out 1,000 digits, float accuracy 98.1%): W8A8 and
W4A8 post-training quantization (per-channel weights, calibrated int8 activations, BatchNorm
folded) keep the logits' SQNR and the accuracy above floors set below the values measured here
(the measured values are in every failure message). SQNR = 10·log10(‖y‖² / ‖y − ŷ‖²) over all
held-out logits (torchao's check)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import compress as cx

DATA = "builtin:mnist5k"
# floors below the values measured here: W8A8 SQNR 39.5 dB / accuracy 98.1%, W4A8 21.3 dB / 98.0%
FLOORS = {(8, 8): (33.0, 0.975), (4, 8): (18.0, 0.97)}


def _recipe(weight_bits: int, act_bits: int):
    return cx.Recipe.from_dict({"version": 1, "model": {"spec": "builtin:mnist-cnn"}, "data": {"calibration": DATA},
                                "quantization": {"layers": {"default": {"weight_bits": weight_bits,
                                                                        "act_bits": act_bits}}}})


def _sqnr_db(reference: torch.Tensor, quantized: torch.Tensor) -> float:
    return 10 * math.log10(float(reference.pow(2).sum()) / max(float((reference - quantized).pow(2).sum()), 1e-30))


@pytest.mark.parametrize("bits", list(FLOORS), ids=lambda b: f"W{b[0]}A{b[1]}")
def test_ptq_keeps_sqnr_and_accuracy_above_floors(bits: tuple[int, int]) -> None:
    floor_sqnr, floor_accuracy = FLOORS[bits]
    model = cx.load_model("builtin:mnist-cnn")
    reference = copy.deepcopy(model)
    applied = cx.apply_plan_(model, _recipe(*bits), DATA)
    heldout = cx.as_data(DATA, role="heldout")
    inputs = torch.cat([batch.inputs[0] for batch in heldout.batches(500)])
    with torch.no_grad():
        sqnr = _sqnr_db(reference(inputs), model(inputs))
    accuracy = applied.after.value
    assert applied.before.value > 0.98
    assert sqnr >= floor_sqnr and accuracy >= floor_accuracy, (
        f"W{bits[0]}A{bits[1]}: SQNR {sqnr:.2f} dB (floor {floor_sqnr}), accuracy {accuracy:.4f} "
        f"(floor {floor_accuracy}, float {applied.before.value:.4f})")
