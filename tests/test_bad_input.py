"""Every bad-input class of issue 16 ends in one line naming the input and exit status 2, through
the CLI (``eval`` checks without compressing; ``curvature`` is a compressing verb)."""

from __future__ import annotations

from pathlib import Path

import pytest

FACTORIES = '''
import torch
from torch import nn

class Log(nn.Module):
    def forward(self, x):
        return torch.log(x)

def tiny():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()

def nan_weight():
    m = tiny()
    with torch.no_grad():
        m[1].weight[0, 0] = float("nan")
    return m

def inf_buffer():
    m = tiny()
    m.register_buffer("scale", torch.tensor([1.0, float("inf")]))
    return m

def nan_outputs():
    return nn.Sequential(nn.Linear(16, 8), Log(), nn.Linear(8, 3)).eval()

def no_layer():
    return nn.Sequential(nn.Flatten(), nn.ReLU())

def good():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 16, generator=g), torch.randint(0, 3, (64,), generator=g)

def nan_pixel():
    x, y = good()
    x[40, 2] = float("nan")
    return x, y

def inf_pixel():
    x, y = good()
    x[5, 0] = float("inf")
    return x, y

def empty():
    return torch.zeros(0, 16), torch.zeros(0, dtype=torch.long)

class EmptySet(torch.utils.data.Dataset):
    def __len__(self):
        return 0
    def __getitem__(self, i):
        raise IndexError(i)

def empty_dataset():
    return EmptySet()

def float_targets():
    x, y = good()
    return x, y.float()

def target_too_large():
    x, y = good()
    y[50] = 7
    return x, y

def negative_target():
    x, y = good()
    y[3] = -1
    return x, y

def wrong_shape():
    return torch.randn(64, 5), torch.randint(0, 3, (64,))

def wrong_dtype():
    return torch.randint(0, 3, (64, 16)), torch.randint(0, 3, (64,))

def two_d_targets():
    x, y = good()
    return x, y[:, None].repeat(1, 2)
'''

CASES = [  # (model, data, words the one line must contain)
    ("nan_weight", "good", ["NaN", "1.weight"]),
    ("inf_buffer", "good", ["Inf", "scale"]),
    ("nan_outputs", "good", ["NaN", "'1'", "first module"]),
    ("tiny", "nan_pixel", ["NaN", "sample 40"]),
    ("tiny", "inf_pixel", ["Inf", "sample 5"]),
    ("tiny", "empty", ["empty", "0 samples"]),
    ("tiny", "empty_dataset", ["empty", "0 samples"]),
    ("tiny", "float_targets", ["float32 targets", "integer"]),
    ("tiny", "target_too_large", ["[0, 7]", "3 classes"]),
    ("tiny", "negative_target", ["[-1, 2]", "3 classes"]),
    ("tiny", "two_d_targets", ["shape", "(64, 2)"]),
    ("tiny", "wrong_shape", ["does not fit", "mat1 and mat2 shapes"]),
    ("tiny", "wrong_dtype", ["does not fit", "dtype"]),
]


@pytest.fixture
def factories(factory_file) -> Path:
    return factory_file(FACTORIES, "bad_inputs.py")


def _one_line_error(result, words: list[str]) -> None:
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and "internal error" not in lines[0], result.err
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("model, data, words", CASES)
def test_eval_diagnoses_bad_input_in_one_line(cli, factories: Path, model: str, data: str, words: list[str]) -> None:
    _one_line_error(cli("eval", f"{factories}:{model}", "--data", f"{factories}:{data}"), words)


@pytest.mark.parametrize("model, data, words", CASES[:6] + CASES[7:9])
def test_curvature_diagnoses_bad_input_in_one_line(cli, factories: Path, model: str, data: str,
                                                   words: list[str]) -> None:
    result = cli("curvature", f"{factories}:{model}", "--data", f"{factories}:{data}", "--max-products", "4")
    _one_line_error(result, words)


def test_a_model_without_compressible_layers_cannot_be_compressed(cli, factories: Path) -> None:
    result = cli("curvature", f"{factories}:no_layer", "--data", f"{factories}:good", "--max-products", "4")
    _one_line_error(result, ["no compressible layer", "nothing to compress"])
    assert cli("eval", f"{factories}:no_layer", "--data", f"{factories}:good").code == 0  # nothing compressed


def test_good_input_passes_the_checks(cli, factories: Path) -> None:
    assert cli("eval", f"{factories}:tiny", "--data", f"{factories}:good").code == 0
