"""Parse a data spec (DESIGN §2) into a DataSource, and pick its split."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress.data.source import SPLITS, DataSource, DatasetData, TensorData, dataset_data
from compress.data.text import TEXT_SUFFIXES
from compress.errors import InputError
from compress.pyfile import call_factory, split_file_spec

if TYPE_CHECKING:
    import torch
    from torch import nn

DATA_SPEC_FORMS = "builtin:NAME, FILE.py:FACTORY, an image folder or a .txt/.jsonl text file (hf: models)"


def load_data(spec: str, split: str | None, default_builtin_split: str, model: "nn.Module | None" = None,
              seq_len: int | None = None) -> DataSource:
    """Load ``spec`` and select ``split``.

    ``split=None`` means: builtins use ``default_builtin_split`` (the verb's role, e.g. ``heldout``
    for eval), user data is used whole. A ``.txt`` / ``.jsonl`` text file is tokenised for
    ``model`` (an ``hf:`` model: its folder's tokenizer, its task; ``compress.data.text``), in
    blocks of ``seq_len`` tokens for a causal LM; ``seq_len`` applies to text data only.
    """
    if split is not None and split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if Path(spec).suffix in TEXT_SUFFIXES and split_file_spec(spec) is None:
        return text_data(Path(spec), model, seq_len).split(split or "all")
    if seq_len is not None:
        raise InputError(f"seq_len applies to text data (.txt / .jsonl files), not to {spec}")
    if spec.startswith("builtin:"):
        return _builtin(spec.removeprefix("builtin:")).split(split or default_builtin_split)
    return _user_data(spec).split(split or "all")


def text_data(path: Path, model: "nn.Module | None", seq_len: int | None) -> DataSource:
    """The text file ``path`` tokenised for the ``hf:`` model ``model`` (``load_text``)."""
    from compress.data.text import load_text
    from compress.models.hf import hf_source

    source = None if model is None else hf_source(model)
    if source is None:
        raise InputError(f"text data {path} is tokenised with the model's own tokenizer; give an hf:FOLDER model "
                         "(a local transformers checkpoint) with it")
    return load_text(path, source.folder, source.task, seq_len)


def _builtin(name: str) -> DataSource:
    from compress.data.builtin import BUILTIN_DATA

    if name not in BUILTIN_DATA:
        raise InputError(f"unknown builtin data {name!r}; available: {', '.join(sorted(BUILTIN_DATA))}")
    return BUILTIN_DATA[name]()


def _user_data(spec: str) -> DataSource:
    file_spec = split_file_spec(spec)
    if file_spec is not None:
        return _from_factory_result(spec, call_factory(*file_spec))
    path = Path(spec)
    if path.is_dir():
        from compress.data.folder import ImageFolderDataset

        return DatasetData(spec, ImageFolderDataset(path), has_targets=True)
    if ":" not in spec and not path.exists():
        raise InputError(f"data not found: {spec}; give {DATA_SPEC_FORMS}")
    raise InputError(f"unrecognised data spec {spec!r}; give {DATA_SPEC_FORMS}")


def _from_factory_result(spec: str, result: object) -> DataSource:
    """Accept ``inputs``, ``(inputs, targets)`` (targets may be None) or a Dataset."""
    import torch

    if isinstance(result, torch.utils.data.Dataset):
        return dataset_data(spec, result)
    return tensor_data(spec, result)


def tensor_data(name: str, result: object, verb: str = "returned") -> TensorData:
    """``inputs`` or ``(inputs, targets)`` tensors (targets may be None; inputs may be a tuple)."""
    import torch

    if isinstance(result, torch.Tensor):
        result = (result, None)
    if isinstance(result, (tuple, list)) and len(result) == 2:
        inputs, targets = result
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        if all(isinstance(x, torch.Tensor) for x in inputs) and (
            targets is None or isinstance(targets, torch.Tensor)
        ):
            _check_lengths(name, inputs, targets)
            return TensorData(name, inputs, targets)
    raise InputError(
        f"{name} {verb} {type(result).__name__}; data must be (inputs, targets) "
        "tensors (targets may be None) or a torch.utils.data.Dataset"
    )


def _check_lengths(spec: str, inputs: tuple, targets: "torch.Tensor | None") -> None:
    lengths = {int(x.shape[0]) for x in inputs} | ({int(targets.shape[0])} if targets is not None else set())
    if len(lengths) != 1:
        raise InputError(f"{spec}: inputs and targets differ in length ({sorted(lengths)}); they must match")
