"""Layer input statistics against dense references: conv patches unfolded in ``F.conv2d``'s order
reproduce the conv exactly, H equals 2·XᵀX/N built from all inputs at once (grouped convs: one H per
group), and two gloo ranks with half the batches each equal one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.reconstruct.stats import collect_layer_stats, layer_samples

REPO = Path(__file__).resolve().parents[1]

CONVS = [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, dilation=(1, 2), padding=(2, 1)),
    dict(in_channels=6, out_channels=6, kernel_size=3, groups=6, padding="same", padding_mode="reflect"),
    dict(in_channels=4, out_channels=6, kernel_size=(2, 3), groups=2, padding="same", dilation=2),
    dict(in_channels=4, out_channels=2, kernel_size=1, padding="valid", padding_mode="circular"),
]


@pytest.mark.parametrize("config", CONVS)
def test_conv_patches_reproduce_conv2d(config: dict) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(**config, bias=False).double()
    x = torch.randn(3, conv.in_channels, 9, 8, dtype=torch.float64)
    expected = conv(x)  # [B, out, H', W']
    samples = layer_samples(conv, x)  # [groups, B·L, d]
    weight = conv.weight.reshape(conv.groups, conv.out_channels // conv.groups, -1)
    products = torch.einsum("gnd,god->gno", samples, weight)  # [groups, B·L, out/groups]
    batch, out, height, width = expected.shape
    actual = products.permute(1, 0, 2).reshape(batch, height, width, out).permute(0, 3, 1, 2)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def _dense_reference(conv: nn.Conv2d, inputs: list[torch.Tensor]) -> torch.Tensor:
    """H_g = 2·XᵀX/N from all patches at once, each built by slicing the padded input by hand."""
    per_group = conv.in_channels // conv.groups
    rows = []
    for x in inputs:
        padded = F.pad(x, (conv.padding[1],) * 2 + (conv.padding[0],) * 2)
        (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
        for b in range(x.shape[0]):
            for i in range(0, padded.shape[2] - kh + 1, sh):
                for j in range(0, padded.shape[3] - kw + 1, sw):
                    rows.append(padded[b, :, i : i + kh, j : j + kw])
    patches = torch.stack(rows)  # [N, C, kh, kw]
    hessians = []
    for g in range(conv.groups):
        x_g = patches[:, g * per_group : (g + 1) * per_group].reshape(len(rows), -1)
        hessians.append(2 * x_g.T @ x_g / len(rows))
    return torch.stack(hessians)


def test_conv_hessian_equals_dense_reference_per_group() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2))
    batches = [torch.randn(2, 4, 7, 7) for _ in range(3)]
    stats = collect_layer_stats(model, batches, ["0"])["0"]
    expected = _dense_reference(model[0], [b.double() for b in batches])
    assert stats.count == 3 * 2 * 16 and stats.hessian.shape == (2, 18, 18)
    torch.testing.assert_close(stats.hessian, expected, rtol=1e-6, atol=1e-6)


def test_linear_counts_every_token() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    batches = [torch.randn(2, 7, 5), torch.randn(1, 4, 5)]
    stats = collect_layer_stats(model, batches, ["0", "2"])
    tokens = torch.cat([b.reshape(-1, 5) for b in batches]).double()
    assert stats["0"].count == 18
    torch.testing.assert_close(stats["0"].hessian[0], 2 * tokens.T @ tokens / 18)
    torch.testing.assert_close(stats["0"].mean[0], tokens.mean(dim=0))
    hidden = torch.relu(model[0](tokens.float())).double()
    torch.testing.assert_close(stats["2"].hessian[0], 2 * hidden.T @ hidden / 18, rtol=1e-6, atol=1e-6)
    assert stats["0"].nbytes == (25 + 5) * 8
    assert not model[0]._forward_pre_hooks  # hooks removed


SCRIPT = """
import os, sys, torch
from torch import nn
from compress.reconstruct.stats import collect_layer_stats
if "RANK" in os.environ:
    torch.distributed.init_process_group("gloo")
rank, world = (torch.distributed.get_rank(), 2) if "RANK" in os.environ else (0, 1)
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 4, 3, groups=1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2))
batches = [torch.randn(n, 3, 8, 8) for n in (3, 2, 4)]  # uneven shards: 3+4 on rank 0, 2 on rank 1
stats = collect_layer_stats(model, batches[rank::world], ["0", "2"])
if rank == 0:
    torch.save({k: (v.hessian, v.mean, v.count) for k, v in stats.items()}, sys.argv[1])
if "RANK" in os.environ:  # wait for every rank, then leave (a rank exiting early aborts gloo)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
"""


def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    script = tmp_path / "stats.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, str(script), str(tmp_path / "one.pt")], check=True, env=env, timeout=120)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
              str(tmp_path / "two.pt")]
    run = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=180, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("one", "two"))
    for name in one:
        assert one[name][2] == two[name][2]
        torch.testing.assert_close(one[name][0], two[name][0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(one[name][1], two[name][1], rtol=1e-6, atol=1e-6)
