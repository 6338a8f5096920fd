"""TensorRT engine build and timing: the skip path where TensorRT or a GPU is missing, the rule
check before building, and (on a GPU machine with TensorRT) a real build and timing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx
import pytest

from compress.errors import InputError
from compress.backends.tensorrt.engine import EngineResult, build_and_time_engine, unavailable_reason
from tests.helpers.onnx_models import conv_model


def expected_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed"
    import torch

    return None if torch.cuda.is_available() else "no CUDA GPU"


@pytest.fixture
def legal_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "conv_qdq.onnx"
    onnx.save(conv_model(), path)
    return path


def test_skips_with_the_reason_when_tensorrt_or_gpu_is_missing(legal_onnx: Path) -> None:
    reason = expected_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present: the build path runs instead")
    result = build_and_time_engine(legal_onnx, batch_size=2, sparse_weights=True)
    assert (result.status, result.reason, result.batch_size, result.median_ms) == ("skipped", reason, 2, None)
    assert str(result) == f"skipped: {reason}" and unavailable_reason() == reason
    assert EngineResult.from_dict(result.to_dict()) == result


def test_rule_violations_stop_the_build(tmp_path: Path) -> None:
    path = tmp_path / "asymmetric.onnx"
    onnx.save(conv_model(act_zero=4), path)
    with pytest.raises(InputError, match="zero_point at quant_x"):
        build_and_time_engine(path)


def test_too_few_runs_is_a_user_error(legal_onnx: Path) -> None:
    with pytest.raises(InputError, match="at least 30 runs"):
        build_and_time_engine(legal_onnx, runs=5)


@pytest.mark.gpu
def test_builds_and_times_an_engine_on_a_gpu(legal_onnx: Path, tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    result = build_and_time_engine(legal_onnx, runs=50, engine_path=tmp_path / "conv.engine")
    assert result.status == "built" and result.runs == 50, result
    assert 0 < result.min_ms <= result.median_ms <= result.p90_ms
    assert (tmp_path / "conv.engine").stat().st_size > 0
    assert EngineResult.from_dict(result.to_dict()) == result
