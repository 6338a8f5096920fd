"""The batch size the curvature stage reads token data in.

``TokenData`` batches sequences sorted by length and pads each batch to its longest sequence.
Every pass the curvature estimators make (the kept forward graphs, each Jᵀu and J v) costs in
proportion to a batch's token slots, padding included, and a masked model's outputs do not
depend on the padding, so the batch size changes the cost and not the figures (with all the
data; a subset's data error spreads over more, smaller batches). The wider the batch, the wider
the range of lengths it pads to its longest: on builtin:sentences (256 sequences of 7–51 tokens)
batches of 128 are 50% padding, of 32 20%, and one Gram product J(Jᵀu) over the set takes 1.5–1.7×
less time at 32 (``benchmarks/README.md``, MiniLM curvature). So the stage halves the batch size
while more than ``MAX_PADDED_SHARE`` of the token slots are padding, down to ``MIN_SEQUENCES``
(below that, per-pass overhead and narrow matrix products give the saving back).
"""

from __future__ import annotations

from compress.data.source import DataSource, TokenData

MAX_PADDED_SHARE = 0.25
MIN_SEQUENCES = 16


def padded_share(data: TokenData, batch_size: int) -> float:
    """Share of the token slots that are padding when ``data`` is read in batches of ``batch_size``."""
    slots = real = 0
    for batch in data.batches(batch_size):
        mask = batch.inputs[1]  # TokenData inputs: (input_ids, attention_mask)
        slots += mask.numel()
        real += int(mask.sum())
    return 1.0 - real / max(slots, 1)


def curvature_batch_size(data: DataSource, batch_size: int) -> int:
    """``batch_size``, halved while token data would be more than ``MAX_PADDED_SHARE`` padding
    (not below ``MIN_SEQUENCES``); other data keeps ``batch_size``."""
    if not isinstance(data, TokenData):
        return batch_size
    while batch_size // 2 >= MIN_SEQUENCES and padded_share(data, batch_size) > MAX_PADDED_SHARE:
        batch_size //= 2
    return batch_size
