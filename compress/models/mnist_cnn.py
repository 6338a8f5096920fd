"""``builtin:mnist-cnn``: a small CNN with BatchNorm, a depthwise conv and a residual add.

Trained deterministically on first use on the 4,000 training digits of ``builtin:mnist5k`` and
cached; the other 1,000 are held out. Architecture (input 1x28x28)::

    stem:  conv3x3(1->16) BN ReLU maxpool2          -> 16x14x14
    conv:  conv3x3(16->32) BN ReLU maxpool2         -> 32x7x7
    block: dwconv3x3(32) BN ReLU conv1x1(32->32) BN, + identity, ReLU
    head:  flatten -> linear(1568->10)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from compress.cache import cache_dir


def conv_bn(cin: int, cout: int, kernel: int, groups: int = 1) -> nn.Sequential:
    """Conv (no bias, BN supplies it) followed by BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class DepthwiseResidual(nn.Module):
    """relu(x + pw(relu(dw(x)))): a MobileNet-style depthwise-separable block with a skip."""

    def __init__(self, channels: int):
        super().__init__()
        self.dw = conv_bn(channels, channels, 3, groups=channels)
        self.pw = conv_bn(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.pw(torch.relu(self.dw(x))))


class MnistCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(1, 16, 3)
        self.conv = conv_bn(16, 32, 3)
        self.block = DepthwiseResidual(32)
        self.head = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.stem(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.head(torch.flatten(self.block(x), 1))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (and so the cache key)."""

    version: int = 1
    seed: int = 0
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4


def train_mnist_cnn(config: TrainConfig) -> MnistCNN:
    """AdamW with a one-cycle schedule on the mnist5k train split; deterministic for a given
    config, torch version and thread count."""
    from compress.data.builtin import mnist5k
    from compress.progress import progress_bar

    train = mnist5k().split("train")
    torch.manual_seed(config.seed)
    model = MnistCNN()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
    )
    order_rng = torch.Generator().manual_seed(config.seed)
    (images,), labels = train.inputs, train.targets
    model.train()
    with progress_bar("training builtin:mnist-cnn (first use)", config.epochs * steps_per_epoch) as advance:
        for _ in range(config.epochs):
            order = torch.randperm(len(train), generator=order_rng)
            for start in range(0, len(train), config.batch_size):
                index = order[start : start + config.batch_size]
                loss = nn.functional.cross_entropy(model(images[index]), labels[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                advance(1)
    return model.eval()


def build_mnist_cnn() -> MnistCNN:
    """The trained model, from the cache or trained now and cached (written atomically)."""
    config = TrainConfig()
    key = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir("models") / f"mnist-cnn-{key}.pt"
    model = MnistCNN()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    model = train_mnist_cnn(config)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), partial)
    os.replace(partial, path)
    return model
