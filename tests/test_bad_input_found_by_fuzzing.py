"""Internal errors the long fuzzing run found (benchmarks/README.md, robustness), each now one line
and exit status 2: curvature that overflows float32 on finite data, and ``~user`` paths naming no
user (or holding a NUL byte)."""

from __future__ import annotations

FACTORIES = '''
import torch
from torch import nn

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).eval()

def huge():
    """Finite, and so are the outputs (about 1e30), but Jacobian products square it past float32."""
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    x[0, 1] = 1e30
    return x, None
'''


def one_line_error(result, *words: str) -> None:
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], result.err
    assert all(word in lines[0] for word in words), lines[0]


def test_curvature_that_overflows_is_refused_in_one_line(cli, factory_file) -> None:
    path = factory_file(FACTORIES)
    result = cli("curvature", f"{path}:model", "--data", f"{path}:huge", "--max-products", "2", "--slq-runs", "1",
                 "--top-k", "1")
    one_line_error(result, "overflows", "rescale")


def test_a_home_folder_of_no_user_is_not_found(cli, factory_file) -> None:
    path = factory_file(FACTORIES)
    one_line_error(cli("eval", "hf:~no-such-user-0", "--data", f"{path}:huge"), "not found", "~no-such-user-0")
    one_line_error(cli("eval", "hf:~\x00", "--data", f"{path}:huge"), "not found")  # in-process callers only
