"""Padding positions of text batches are left out of the layer statistics (``stats.token_mask``),
in the one-pass collection and in the true-sequential driver, against H computed by hand over the
real tokens only."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compress.reconstruct.layer import ReconstructSettings, reconstruct_layer
from compress.reconstruct.sequential import reconstruct_model_
from compress.reconstruct.stats import LayerStats, collect_layer_stats, token_mask


class TinyEncoder(nn.Module):
    """Embedding → Linear → ReLU → Linear, called as ``model(input_ids, attention_mask)``, mean-pooled
    over the real tokens (the padding does not reach the output)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.up = nn.Linear(6, 8)
        self.down = nn.Linear(8, 4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.down(torch.relu(self.up(self.embed(input_ids))))
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1)


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    batches = []
    for lengths in ([5, 2, 3], [4, 1]):
        ids = torch.randint(1, 11, (len(lengths), max(lengths)))
        mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
        batches.append((ids * mask, mask))  # padding id 0
    return batches


def _real_rows(model: TinyEncoder, batches, layer: str) -> torch.Tensor:
    rows = []
    for ids, mask in batches:
        x = model.embed(ids)
        if layer == "down":
            x = torch.relu(model.up(x))
        rows.append(x[mask.bool()])
    return torch.cat(rows).double().detach()


def test_token_mask_recognises_only_text_batches() -> None:
    ids, mask = _batches()[0]
    assert torch.equal(token_mask((ids, mask)), mask.bool())
    assert token_mask(torch.randn(3, 5)) is None
    assert token_mask((torch.randn(3, 5), torch.randn(3, 5))) is None  # float inputs: not tokens
    assert token_mask((ids, mask[:, :2])) is None
    assert token_mask((ids, ids)) is None  # a second integer tensor that is not 0/1: not a mask
    assert token_mask(((ids, mask), torch.zeros(3))) is None


def test_statistics_count_only_real_tokens() -> None:
    model, batches = TinyEncoder().eval(), _batches()
    stats = collect_layer_stats(model, batches, ["up", "down"])
    for layer in ("up", "down"):
        rows = _real_rows(model, batches, layer)
        assert stats[layer].count == 15 == rows.shape[0]
        torch.testing.assert_close(stats[layer].hessian[0], 2 * rows.T @ rows / 15, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(stats[layer].mean[0], rows.mean(0), rtol=1e-6, atol=1e-6)
    plain = collect_layer_stats(model, [ids for ids, _ in batches], ["up"], lambda m, ids: m.up(m.embed(ids)))
    assert plain["up"].count == 5 * 3 + 4 * 2  # a batch that is not (ids, mask): every row counts


@pytest.mark.parametrize("drift", [False, True])
def test_sequential_driver_masks_padding(drift: bool) -> None:
    model, batches = TinyEncoder().eval(), _batches()
    reference = TinyEncoder().eval()
    reference.load_state_dict(model.state_dict())
    original = copy.deepcopy(reference)
    settings = {"up": ReconstructSettings(bits=3, input_drift=drift), "down": ReconstructSettings(bits=3, input_drift=drift)}
    results, _ = reconstruct_model_(model, settings, batches)
    for layer in ("up", "down"):  # by hand: each layer's H from the real tokens of the model as fixed so far
        rows, floats = _real_rows(reference, batches, layer), _real_rows(original, batches, layer)
        count = rows.shape[0]
        stats = LayerStats((2 * rows.T @ rows / count)[None], rows.mean(0)[None], count)
        if drift:  # paired with the float model's real tokens
            stats = LayerStats(stats.hessian, stats.mean, count, (2 * rows.T @ floats / count)[None],
                               (2 * floats.T @ floats / count)[None])
        expected = reconstruct_layer(getattr(reference, layer).weight, stats, settings[layer])
        torch.testing.assert_close(results[layer].weight, expected.weight, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            getattr(reference, layer).weight.copy_(expected.weight)
