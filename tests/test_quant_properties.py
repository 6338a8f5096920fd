"""Properties of the quantizers (hypothesis) and of the calibrators' ranges."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.errors import ConfigError, InputError
from compress.quant.calibrate import RangeObserver, calibrated_range, code_range, grid
from compress.quant.fake import fake_quantize, lsq_gradient_scale, scale_gradient
from compress.quant.records import QuantSettings

scales = st.floats(1e-3, 10.0)
signs = st.booleans()


@settings(max_examples=60, deadline=None)
@given(scale=scales, signed=signs, zero_point=st.integers(0, 255), seed=st.integers(0, 2**16))
def test_dequantized_grid_points_are_fixed_points(scale: float, signed: bool, zero_point: int, seed: int) -> None:
    q_min, q_max = code_range(8, signed)
    zero_point = 0 if signed else zero_point
    codes = torch.randint(q_min, q_max + 1, (64,), generator=torch.Generator().manual_seed(seed))
    s = torch.tensor(scale)
    on_grid = (codes - zero_point) * s
    assert torch.equal(fake_quantize(on_grid, s, zero_point, q_min, q_max), on_grid)


@settings(max_examples=60, deadline=None)
@given(low=st.floats(-50, 0), width=st.floats(0.01, 100), signed=signs, seed=st.integers(0, 2**16))
def test_error_inside_the_range_is_at_most_half_a_step(low: float, width: float, signed: bool, seed: int) -> None:
    high = low + width if low + width > 0 else 0.01
    scale, zero_point, q_min, q_max = grid(low, high, 8, signed)
    x = torch.empty(256, dtype=torch.float64).uniform_(low, high, generator=torch.Generator().manual_seed(seed))
    error = (fake_quantize(x, torch.tensor(scale, dtype=torch.float64), zero_point, q_min, q_max) - x).abs().max()
    assert error <= scale / 2 * (1 + 1e-9), f"error {error} > half step {scale / 2}"


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), shift=st.floats(-3, 3), signed=signs)
def test_calibrated_ranges_contain_what_they_should(seed: int, shift: float, signed: bool) -> None:
    generator = torch.Generator().manual_seed(seed)
    batches = [torch.randn(500, generator=generator) + shift for _ in range(3)]
    batches.append(torch.randn(500, generator=generator) * 4 + shift)  # widens the histogram
    observer = RangeObserver()
    for batch in batches:
        observer.observe(batch)
    data = torch.cat(batches).double()
    low, high = calibrated_range(observer, "minmax", signed, 99.0, 8)
    assert low <= min(float(data.min()), 0) and high >= max(float(data.max()), 0)
    if signed:
        assert low == -high
    p_low, p_high = calibrated_range(observer, "percentile", signed, 99.0, 8)
    inside = float(((data >= p_low) & (data <= p_high)).double().mean())
    expected = 0.99 if signed else 0.98  # |x| ≤ p99 of |x|, or p1 ≤ x ≤ p99
    assert inside >= expected - 0.005, f"percentile-99 range holds {inside:.4f} of the data, expected {expected}"
    assert low <= p_low <= 0 <= p_high <= high
    m_low, m_high = calibrated_range(observer, "mse", signed, 99.0, 8)
    assert low <= m_low <= 0 <= m_high <= high


def test_mse_clip_beats_minmax_on_heavy_tails() -> None:
    x = torch.distributions.StudentT(2.0).sample((20000,)).clamp(-200, 200)
    observer = RangeObserver()
    observer.observe(x)

    def error(calibrator: str) -> float:
        scale, zero_point, q_min, q_max = grid(*calibrated_range(observer, calibrator, True, 99.9, 8), 8, True)
        return float(((fake_quantize(x, torch.tensor(scale), zero_point, q_min, q_max) - x) ** 2).mean())

    assert error("mse") < error("minmax")


def test_clipped_straight_through_gradient() -> None:
    x = torch.tensor([-3.0, -0.4, 0.2, 0.6, 5.0], requires_grad=True)
    fake_quantize(x, torch.tensor(0.1), 0, -10, 10).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_lsq_scale_gradient_matches_esser_et_al() -> None:
    """∂x̂/∂s = round(x/s) − x/s inside, q_min / q_max outside, times g = 1/√(N·q_max)."""
    weight = torch.tensor([[0.26, -0.74, 0.9, -2.0]])
    scale = torch.tensor([0.2], requires_grad=True)
    g = lsq_gradient_scale(weight, 3)
    assert g == pytest.approx(1 / (4 * 3) ** 0.5)
    fake_quantize(weight, scale_gradient(scale, g).reshape(-1, 1), 0, -3, 3).sum().backward()
    v = weight / 0.2
    expected = torch.round(v) - v
    expected = torch.where(v > 3, torch.tensor(3.0), torch.where(v < -3, torch.tensor(-3.0), expected)).sum() * g
    assert scale.grad.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weight_bits": 9}, "weight_bits 9"),
        ({"act_bits": 4}, "act_bits 4"),
        ({"calibrator": "entropy"}, "calibrator 'entropy'"),
        ({"percentile": 20}, "percentile 20"),
        ({"weight_bits": None, "learnable_scales": True}, "learnable_scales"),
    ],
)
def test_bad_settings_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QuantSettings(**kwargs)
