"""Text data for hf: models: .txt / .jsonl files tokenised with the model folder's tokenizer into
next-token blocks (causal LM), sentences (encoders) or labelled sentences (classifiers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compress.data.source import TensorData, TokenData
from compress.data.text import IGNORE_INDEX, load_text
from compress.errors import InputError
from compress.models.hf import load_tokenizer
from tests.helpers.hf_tiny import MAX_TOKENS, save_model

pytest.importorskip("transformers")

LINES = ["the model is small", "", "   ", "curvature tells which layers matter", "we compress it"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: save_model(kind, root / kind) for kind in ("gpt2", "bert-classifier")}


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_causal_lm_blocks_hold_the_stream_and_its_next_tokens(folders, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(folders["gpt2"])
    eos = tokenizer.eos_token_id
    stream = [t for line in LINES if line.strip() for t in [*tokenizer(line.strip())["input_ids"], eos]]
    data = load_text(_write(tmp_path, "a.txt", LINES), folders["gpt2"], "causal-lm", seq_len=4)
    assert type(data) is TensorData and data.has_targets
    input_ids, attention_mask = data.inputs
    assert input_ids.shape == data.targets.shape == (-(-len(stream) // 4), 4)
    kept = attention_mask.flatten().bool()
    assert input_ids.flatten()[kept].tolist() == stream and int(kept.sum()) == len(stream)
    targets = data.targets.flatten()
    assert targets[: len(stream) - 1].tolist() == stream[1:]  # across block borders too
    assert (targets[len(stream) - 1 :] == IGNORE_INDEX).all()
    train, heldout = data.split("train"), data.split("heldout")
    assert len(train) + len(heldout) == len(data) and train.targets.shape[1] == 4


def test_causal_lm_blocks_fit_the_model_and_its_loss(folders, tmp_path: Path) -> None:
    from compress.curvature.losses import cross_entropy
    from compress.models.hf import build_hf_model

    data = load_text(_write(tmp_path, "a.txt", LINES * 3), folders["gpt2"], "causal-lm", seq_len=8)
    model = build_hf_model(folders["gpt2"])
    batch = next(data.batches(4))
    with torch.no_grad():
        loss = cross_entropy(model(*batch.inputs), batch.targets)
    assert 3.0 < loss.item() < 6.0  # about log(96) = 4.56 for random weights


def test_encoder_sentences_and_classifier_labels(folders, tmp_path: Path) -> None:
    records = [{"text": "the model is small", "label": 0}, {"text": "we compress it", "label": 2},
               {"text": "layers matter", "label": 1}]
    path = _write(tmp_path, "a.jsonl", [json.dumps(r) for r in records] + [""])
    classifier = load_text(path, folders["bert-classifier"], "sequence-classification")
    assert type(classifier) is TokenData and classifier.targets.tolist() == [0, 2, 1]
    embedding = load_text(path, folders["bert-classifier"], "embedding", seq_len=3)
    assert embedding.targets is None and embedding.inputs[0].shape == (3, 3)
    tokenizer = load_tokenizer(folders["bert-classifier"])
    assert classifier.inputs[0][1, :3].tolist() == tokenizer("we compress it")["input_ids"]
    unlabelled = load_text(_write(tmp_path, "b.txt", LINES), folders["bert-classifier"], "sequence-classification")
    assert len(unlabelled) == 3 and not unlabelled.has_targets


@pytest.mark.parametrize("name, lines, task, seq_len, message", [
    ("e.txt", ["", "  "], "causal-lm", 4, "has no usable samples"),
    ("e.jsonl", ['{"label": 1}'], "embedding", None, 'e.jsonl:1 has no "text" string'),
    ("e.jsonl", ['{"text": "a", "label": "pos"}'], "sequence-classification", None, "label 'pos' is not an integer"),
    ("e.jsonl", ['{"text": "a", "label": 1.5}'], "sequence-classification", None, "label 1.5 is not an integer"),
    ("e.jsonl", ['{"text": "a", "label": 7}'], "sequence-classification", None, "label 7 is outside the model's classes 0..2"),
    ("e.jsonl", ['{"text": "a", "label": 1}', '{"text": "b"}'], "sequence-classification", None, "1 of 2 samples have no label"),
    ("e.jsonl", ["{oops"], "embedding", None, "e.jsonl:1 is not JSON"),
    ("e.csv", ["a"], "embedding", None, "must be a .txt or .jsonl file"),
    ("e.txt", ["a b"], "causal-lm", MAX_TOKENS + 1, f"seq_len {MAX_TOKENS + 1} exceeds the model's maximum sequence length {MAX_TOKENS}"),
    ("e.txt", ["a b"], "causal-lm", None, "seq_len is required for causal-lm"),
    ("e.txt", ["a b"], "summarise", None, "unknown task 'summarise'"),
])
def test_bad_text_gives_one_line_errors(folders, tmp_path: Path, name, lines, task, seq_len, message) -> None:
    folder = folders["gpt2" if task == "causal-lm" else "bert-classifier"]
    with pytest.raises(InputError) as error:
        load_text(_write(tmp_path, name, lines), folder, task, seq_len)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_missing_file_and_missing_tokenizer(folders, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="text data not found"):
        load_text(tmp_path / "none.txt", folders["gpt2"], "causal-lm", 4)
    bare = save_model("llama", tmp_path / "bare", tokenizer=False)
    with pytest.raises(InputError, match="has no tokenizer"):
        load_text(_write(tmp_path, "a.txt", LINES), bare, "causal-lm", 4)
