"""The curvature stage's token batching: padding counted by hand, the halving rule, other data untouched."""

import torch

from compress.curvature.batching import MAX_PADDED_SHARE, MIN_SEQUENCES, curvature_batch_size, padded_share
from compress.data.source import TensorData, TokenData


def token_data(lengths: list[int]) -> TokenData:
    width = max(lengths)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    return TokenData("tokens", (mask * 7, mask), None)


def test_padded_share_counts_the_slots_of_length_sorted_batches() -> None:
    data = token_data([5, 1, 2, 8])  # sorted: 1, 2 | 5, 8 -> widths 2 and 8
    assert padded_share(data, 2) == 1 - (1 + 2 + 5 + 8) / (2 * 2 + 2 * 8)
    assert padded_share(data, 4) == 1 - 16 / (4 * 8)
    assert padded_share(data, 1) == 0.0


def test_token_batches_halve_until_padding_is_at_most_the_bound() -> None:
    lengths = [1 + (i * 37) % 64 for i in range(256)]  # 1..64 tokens, spread evenly
    data = token_data(lengths)
    size = curvature_batch_size(data, 128)
    assert MIN_SEQUENCES <= size < 128 and 128 % size == 0
    assert padded_share(data, size) <= MAX_PADDED_SHARE < padded_share(data, 2 * size)


def test_uniform_lengths_and_other_data_keep_the_batch_size() -> None:
    assert curvature_batch_size(token_data([9] * 300), 128) == 128
    assert curvature_batch_size(TensorData("x", (torch.zeros(300, 3),), None), 128) == 128


def test_halving_stops_at_the_floor() -> None:
    data = token_data([int(1.08**i) + 1 for i in range(64)])  # lengths 1..128, growing geometrically
    assert padded_share(data, MIN_SEQUENCES) > MAX_PADDED_SHARE
    assert curvature_batch_size(data, 128) == MIN_SEQUENCES
