"""Text data wired into the verbs: a .txt / .jsonl path is tokenised for the hf: model it is used
with (``seq_len`` tokens per causal-LM block), evaluation of a causal LM reports perplexity and
the mean per-token KL to a reference, recipes carry ``model.task`` and ``data.seq_len``, and a
layer whose weight is tied to another module's is not compressible."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.errors import ConfigError, InputError
from tests.helpers.hf_tiny import save_model

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint folder, a text file of 20 sentences)."""
    from compress.data.builtin import sentence_texts

    root = tmp_path_factory.mktemp("wiring")
    text = root / "text.txt"
    text.write_text("\n".join(sentence_texts()[:20]), encoding="utf-8")
    return save_model("gpt2", root / "gpt2"), text


def test_a_text_path_is_tokenised_for_the_model_it_is_used_with(gpt2) -> None:
    import compress as cx
    from compress.data.text import load_text

    folder, text = gpt2
    model = cx.load_model(f"hf:{folder}")
    data = cx.as_data(str(text), model=model, seq_len=8)
    expected = load_text(text, folder, "causal-lm", seq_len=8)
    assert torch.equal(data.inputs[0], expected.inputs[0]) and torch.equal(data.targets, expected.targets)
    heldout = cx.as_data(str(text), "heldout", model=model, seq_len=8)
    assert len(heldout) == round(0.2 * len(data))
    with pytest.raises(InputError, match="hf:FOLDER"):
        cx.as_data(str(text), model=nn.Linear(2, 2), seq_len=8)
    with pytest.raises(InputError, match="seq_len applies to text data"):
        cx.as_data("builtin:digits", model=model, seq_len=8)
    with pytest.raises(InputError, match="seq_len applies to a text file"):
        cx.as_data((torch.zeros(4, 8, dtype=torch.long), None), seq_len=8)


def test_causal_lm_evaluation_is_perplexity_and_kl_to_the_reference(gpt2) -> None:
    import copy

    from compress.data.text import load_text
    from compress.models.hf import build_hf_model
    from compress.pipeline.evaluate import evaluate_model

    folder, text = gpt2
    spec = f"hf:{folder}"
    plain = evaluate_model(spec, str(text), seq_len=8)

    reference = build_hf_model(folder)
    data = load_text(text, folder, "causal-lm", seq_len=8)
    with torch.no_grad():
        logits = reference(*data.inputs).double()
    kept = data.targets != -100
    nll = -torch.log_softmax(logits[kept], dim=-1).gather(1, data.targets[kept].unsqueeze(1)).sum()
    assert plain.metric == "perplexity" and plain.mean_token_kl is None
    assert plain.value == pytest.approx(math.exp(float(nll) / int(kept.sum())), rel=1e-6)
    assert plain.num_samples == len(data)

    perturbed = copy.deepcopy(reference)
    with torch.no_grad():
        perturbed.model.transformer.h[1].mlp.c_proj.weight.mul_(-2.0)
    moved = evaluate_model(perturbed, str(text), reference=spec, seq_len=8)
    with torch.no_grad():
        log_p = torch.log_softmax(logits, dim=-1)
        log_q = torch.log_softmax(perturbed(*data.inputs).double(), dim=-1)
    mask = data.inputs[1].bool()
    expected_kl = float((log_p.exp() * (log_p - log_q)).sum(dim=-1)[mask].mean())
    assert moved.mean_token_kl == pytest.approx(expected_kl, rel=1e-6) and moved.mean_token_kl > 1e-4
    assert moved.to_dict()["perplexity"] == moved.value != pytest.approx(plain.value)


def test_recipes_carry_task_and_seq_len_and_refuse_bad_values() -> None:
    from compress.recipe.schema import parse_recipe

    payload = {"version": 1, "model": {"spec": "hf:folder", "task": "causal-lm"},
               "data": {"calibration": "text.txt", "seq_len": 64}}
    recipe = parse_recipe(payload, "r")
    assert recipe.model["task"] == "causal-lm" and recipe.data["seq_len"] == 64
    assert parse_recipe(recipe.to_dict(), "again") == recipe
    bad = {"version": 1, "model": {"spec": "hf:folder", "task": "translation"},
           "data": {"calibration": "text.txt", "seq_len": 1}}
    with pytest.raises(ConfigError) as error:
        parse_recipe(bad, "r")
    assert "model.task" in str(error.value) and "data.seq_len" in str(error.value)


class _TiedLM(nn.Module):
    """An embedding and an output head sharing one matrix, and an untied middle layer."""

    def __init__(self, tie: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.middle = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        if tie:
            self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.middle(self.embed(ids)))


def test_a_layer_with_a_tied_weight_is_not_compressible() -> None:
    from compress.vocab.layers import compressible_layers, tied_parameters

    assert list(compressible_layers(_TiedLM(tie=True))) == ["middle"]
    assert tied_parameters(_TiedLM(tie=True)) == (("embed.weight", "head.weight"),)
    assert list(compressible_layers(_TiedLM(tie=False))) == ["middle", "head"]
    assert tied_parameters(_TiedLM(tie=False)) == ()
