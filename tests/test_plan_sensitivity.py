"""Ω predicts the loss change of compressing a layer of an exactly quadratic loss."""

import torch

from compress.plan.sensitivity import LayerOption, compressed_weight, sensitivity


def test_sensitivity_is_exact_for_an_isotropic_quadratic() -> None:
    # L(W) = ½ λ ‖W − W*‖² with W = W*: Hessian λI, Tr/n = λ, ΔL = ½ λ ‖ΔW‖² exactly.
    torch.manual_seed(0)
    weight, lam = torch.randn(8, 16), 3.0
    for option in (LayerOption(4), LayerOption(2), LayerOption(8, 0.5), LayerOption(None, 0.75),
                   LayerOption(4, 0.5, "2:4"), LayerOption(4, 0.25, "channel")):
        changed = compressed_weight(weight, option)
        actual = 0.5 * lam * float((changed - weight).double().pow(2).sum())
        assert abs(sensitivity(weight, lam * weight.numel(), weight.numel(), option) - actual) < 1e-9


def test_fewer_bits_and_more_sparsity_cost_more() -> None:
    torch.manual_seed(1)
    weight = torch.randn(16, 32)

    def omega(option: LayerOption) -> float:
        return sensitivity(weight, 10.0, weight.numel(), option)

    assert omega(LayerOption(None)) == 0.0
    assert omega(LayerOption(8)) < omega(LayerOption(4)) < omega(LayerOption(3)) < omega(LayerOption(2))
    assert omega(LayerOption(8, 0.25)) < omega(LayerOption(8, 0.5)) < omega(LayerOption(8, 0.9))


def test_pruned_weights_stay_zero_after_quantization() -> None:
    torch.manual_seed(2)
    weight = torch.randn(4, 8)
    changed = compressed_weight(weight, LayerOption(3, 0.5))
    assert int((changed == 0).sum()) >= 16
    labels = [LayerOption(4, 0.5, "2:4"), LayerOption(None, 0.5), LayerOption(3, 0.25, "channel"), LayerOption(8)]
    assert [o.label() for o in labels] == ["w4+2:4", "fp32+s0.5", "w3+ch0.25", "w8"]
