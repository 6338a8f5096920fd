"""Text data for ``hf:`` models: a local ``.txt`` (one sample per line, blank lines skipped) or
``.jsonl`` (one object per line with a ``text`` string and an optional integer ``label``) file,
tokenised with the model folder's tokenizer.

- ``causal-lm``: the samples' tokens, each sample closed by the end-of-text token, are joined
  into one stream and cut into blocks of ``seq_len`` tokens (``TensorData``: inputs
  ``(input_ids, attention_mask)``, targets ``[blocks, seq_len]``). The target of position t is the
  stream's token t + 1; the last block is padded, and padded positions and the stream's last
  token (no next token) have target ``IGNORE_INDEX``.
- ``embedding``: one sequence per sample, truncated at ``seq_len`` tokens (``TokenData``, no targets).
- ``sequence-classification``: as ``embedding``, with the samples' labels as targets when the
  file gives them (every line or none).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from compress.data.source import TensorData, TokenData
from compress.errors import InputError
from compress.models.tasks import TASKS

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
DEFAULT_ENCODER_TOKENS = 128
TEXT_SUFFIXES = (".txt", ".jsonl")


def load_text(path: str | Path, model_folder: str | Path, task: str, seq_len: int | None = None) -> TensorData:
    """The samples of the text file ``path`` tokenised for the ``task`` model in ``model_folder``
    (see the module docstring). ``seq_len`` is required for ``causal-lm``; for encoders it
    defaults to ``min(DEFAULT_ENCODER_TOKENS, the model's maximum)``."""
    from compress.models.hf import checkpoint_folder, load_tokenizer, max_sequence_length

    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    folder = checkpoint_folder(model_folder)
    seq_len = _sequence_length(seq_len, task, max_sequence_length(folder))
    texts, labels = read_samples(Path(path))
    tokenizer = load_tokenizer(folder)
    name = str(path)
    if task == "causal-lm":
        return TensorData(name, *_blocks(tokenizer, texts, seq_len))
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=seq_len, return_tensors="pt")
    inputs = (encoded["input_ids"], encoded["attention_mask"])
    if task == "embedding" or labels is None:
        return TokenData(name, inputs, None)
    return TokenData(name, inputs, _checked_labels(name, labels, folder))


def read_samples(path: Path) -> tuple[list[str], list[int] | None]:
    """(texts, labels or None) of a ``.txt`` / ``.jsonl`` file; one-line ``InputError`` for a
    missing file, an unknown suffix, a bad line, or a file without usable samples."""
    if path.suffix not in TEXT_SUFFIXES:
        raise InputError(f"text data must be a {' or '.join(TEXT_SUFFIXES)} file, not {path.name}")
    if not path.is_file():
        raise InputError(f"text data not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text: {exc}") from exc
    numbered = [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]
    samples = [(line, None) for _, line in numbered] if path.suffix == ".txt" else [
        _json_sample(path, number, line) for number, line in numbered]
    samples = [(text, label) for text, label in samples if text.strip()]
    if not samples:
        raise InputError(f"{path} has no usable samples (non-blank lines{' with text' if path.suffix == '.jsonl' else ''})")
    labelled = [label is not None for _, label in samples]
    if any(labelled) and not all(labelled):
        raise InputError(f"{path}: {labelled.count(False)} of {len(samples)} samples have no label; label all or none")
    texts = [text for text, _ in samples]
    return texts, ([int(label) for _, label in samples] if all(labelled) else None)  # type: ignore[arg-type]


def _json_sample(path: Path, number: int, line: str) -> tuple[str, int | None]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{number} is not JSON: {exc.msg}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise InputError(f"{path}:{number} has no \"text\" string; each line must be {{\"text\": ..., \"label\": <int>}}")
    label = record.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
        raise InputError(f"{path}:{number}: label {label!r} is not an integer class index")
    return record["text"], label


def _sequence_length(seq_len: int | None, task: str, limit: int | None) -> int:
    if seq_len is None:
        if task == "causal-lm":
            raise InputError("seq_len is required for causal-lm text data (tokens per block)")
        return DEFAULT_ENCODER_TOKENS if limit is None else min(DEFAULT_ENCODER_TOKENS, limit)
    if seq_len < 2:
        raise InputError(f"seq_len is {seq_len}; it must be at least 2")
    if limit is not None and seq_len > limit:
        raise InputError(f"seq_len {seq_len} exceeds the model's maximum sequence length {limit}")
    return seq_len


def _blocks(tokenizer, texts: list[str], seq_len: int) -> tuple[tuple["torch.Tensor", "torch.Tensor"], "torch.Tensor"]:
    """((input_ids, attention_mask), next-token targets) of the token stream cut into blocks."""
    import torch

    stream = torch.tensor(_token_stream(tokenizer, texts), dtype=torch.long)
    if len(stream) < 2:
        raise InputError(f"the text has {len(stream)} token(s); a causal LM needs at least 2 (one to predict)")
    num_blocks = -(-len(stream) // seq_len)
    size = num_blocks * seq_len
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
    input_ids = torch.full((size,), pad_id, dtype=torch.long)
    input_ids[: len(stream)] = stream
    attention_mask = torch.zeros(size, dtype=torch.long)
    attention_mask[: len(stream)] = 1
    targets = torch.full((size,), IGNORE_INDEX, dtype=torch.long)
    targets[: len(stream) - 1] = stream[1:]
    shape = (num_blocks, seq_len)
    return (input_ids.view(shape), attention_mask.view(shape)), targets.view(shape)


def _token_stream(tokenizer, texts: list[str]) -> list[int]:
    """The tokens of every text (with the tokenizer's own special tokens), each text closed by
    the end-of-text token when the tokenizer has one."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]:
        stream.extend(ids if eos is None or (ids and ids[-1] == eos) else [*ids, eos])
    return stream


def _checked_labels(name: str, labels: list[int], folder: Path) -> "torch.Tensor":
    import torch

    from compress.models.hf import num_labels

    classes = num_labels(folder)
    bad = [label for label in labels if label < 0 or (classes is not None and label >= classes)]
    if bad:
        raise InputError(f"{name}: label {bad[0]} is outside the model's classes 0..{(classes or 1) - 1}")
    return torch.tensor(labels, dtype=torch.long)
