"""The ce loss with a token axis, perplexity and per-token KL, against plain references."""

from __future__ import annotations

import math

import pytest
import torch

from compress.curvature.losses import cross_entropy
from compress.errors import InputError
from compress.metrics.text import perplexity, token_kl, token_nll


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=generator, dtype=torch.float64)
    targets = torch.tensor([[3, 0, 6, -100], [1, 1, -100, -100]])
    return logits, targets


def _reference_nll(logits: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """−log p(y) per kept position, by explicit softmax."""
    return [-math.log(math.exp(logits[b, t, targets[b, t]]) / sum(math.exp(z) for z in logits[b, t].tolist()))
            for b in range(targets.shape[0]) for t in range(targets.shape[1]) if targets[b, t] != -100]


def test_cross_entropy_over_tokens_ignores_padding() -> None:
    logits, targets = _case()
    expected = _reference_nll(logits, targets)
    assert len(expected) == 5
    assert cross_entropy(logits, targets).item() == pytest.approx(sum(expected) / 5, rel=1e-12)


def test_cross_entropy_over_classes_is_unchanged() -> None:
    logits, _ = _case()
    classes, targets = logits[:, 0], torch.tensor([2, 5])
    expected = sum(_reference_nll(classes[:, None], targets[:, None])) / 2
    assert cross_entropy(classes, targets).item() == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_over_tokens_has_second_derivatives() -> None:
    logits, targets = _case()
    logits.requires_grad_(True)
    (gradient,) = torch.autograd.grad(cross_entropy(logits, targets), logits, create_graph=True)
    (hvp,) = torch.autograd.grad(gradient[0, 0, 0], logits)
    assert hvp[1, 3].abs().sum() == 0 and hvp[0, 0].abs().sum() > 0  # padding has no curvature


def test_token_nll_and_perplexity() -> None:
    logits, targets = _case()
    total, count = token_nll(logits, targets)
    assert count == 5 and total == pytest.approx(sum(_reference_nll(logits, targets)), rel=1e-12)
    assert perplexity(total, count) == pytest.approx(math.exp(total / 5))
    uniform = torch.zeros(1, 3, 7)
    assert perplexity(*token_nll(uniform, torch.tensor([[1, 2, 3]]))) == pytest.approx(7.0)
    with pytest.raises(InputError, match="no next-token targets"):
        perplexity(0.0, 0)


def test_token_kl_against_explicit_sums() -> None:
    logits, _ = _case()
    reference = logits + torch.randn(logits.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    total, count = token_kl(logits, reference, mask)
    expected = 0.0
    for b, t in [(0, 0), (0, 1), (0, 2), (1, 0)]:
        p = torch.softmax(reference[b, t], -1).tolist()
        q = torch.softmax(logits[b, t], -1).tolist()
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert count == 4 and total == pytest.approx(expected, rel=1e-10)
    assert token_kl(logits, logits, mask)[0] == pytest.approx(0.0, abs=1e-12)


def test_causal_lm_scores_over_a_data_source(tmp_path) -> None:
    import copy

    from compress.data.builtin import sentence_texts
    from compress.data.text import load_text
    from compress.metrics.text import causal_lm_scores
    from compress.models.hf import build_hf_model
    from tests.helpers.hf_tiny import save_model

    pytest.importorskip("transformers")
    folder = save_model("gpt2", tmp_path / "gpt2")
    text = tmp_path / "t.txt"
    text.write_text("\n".join(sentence_texts()[:6]), encoding="utf-8")
    data = load_text(text, folder, "causal-lm", seq_len=8)
    model = build_hf_model(folder)
    with torch.no_grad():
        logits = model(*data.inputs)
    kept = data.targets != -100
    expected = math.exp(torch.nn.functional.cross_entropy(logits[kept], data.targets[kept]).item())
    same = causal_lm_scores(model, data, reference=model, batch_size=3)
    assert same.perplexity == pytest.approx(expected, rel=1e-5)
    assert same.num_targets == int(kept.sum()) and same.num_positions == int(data.inputs[1].sum())
    assert same.mean_token_kl == pytest.approx(0.0, abs=1e-9)
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        perturbed.model.transformer.h[0].mlp.c_fc.weight.mul_(3.0)
    moved = causal_lm_scores(perturbed, data, reference=model)
    assert moved.mean_token_kl > 1e-4 and moved.perplexity != pytest.approx(same.perplexity)
    assert causal_lm_scores(model, data).mean_token_kl is None
