"""``hf:PATH``: a Hugging Face transformers checkpoint from a local folder (config.json and
safetensors weights, tokenizer if present), never looked up on a hub.

The model is wrapped so that every model kind is called the same way, positionally,
``model(input_ids, attention_mask)``, and returns one tensor:

- ``causal-lm``: next-token logits ``[batch, tokens, vocab]``;
- ``sequence-classification``: class logits ``[batch, classes]``;
- ``embedding``: the mean-pooled, L2-normalised last hidden states ``[batch, hidden]``, as
  sentence-transformers computes sentence embeddings (Reimers & Gurevych 2019).

Made ready for every stage at load:

- attention is the eager (plain matmul + softmax) implementation, which has second derivatives
  and forward-mode derivatives (the CPU flash kernel has neither);
- GPT-2's ``Conv1D`` (``y = x W + b`` with ``W`` stored ``[in, out]``) becomes an ``nn.Linear`` of
  the same name holding ``Wᵀ``: equal outputs, and every stage sees one layer kind. The names
  are recorded in ``HFSource.transposed`` so a writer of Hugging Face files can transpose back;
- parameters shared between modules (a language-model head tied to the input embeddings) stay
  shared; ``compress.vocab.layers.tied_parameters`` lists them, and a layer whose weight is tied
  is not compressible (``compressible_layers``), so no stage compresses one side of a tie.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.errors import InputError, MissingDependencyError
from compress.models.tasks import TASKS

_ARCHITECTURE_SUFFIXES = {"ForCausalLM": "causal-lm", "LMHeadModel": "causal-lm",
                          "ForSequenceClassification": "sequence-classification"}
_CONFIG_MAX_LENGTH_KEYS = ("max_position_embeddings", "n_positions")


@dataclass(frozen=True)
class HFSource:
    """Where a wrapped transformers model came from: its folder, its task, and the names of the
    ``nn.Linear`` layers that were ``Conv1D`` in the checkpoint (their stored weights are ``Wᵀ``;
    names are as in the wrapper, i.e. with the ``model.`` / ``encoder.`` prefix)."""

    folder: Path
    task: str
    transposed: tuple[str, ...]


def build_hf_model(path: str | Path, task: str | None = None) -> nn.Module:
    """The transformers model saved in the local folder ``path``, wrapped as described in the
    module docstring, in eval mode; ``task`` (one of ``TASKS``) defaults to the head the config's
    ``architectures`` names (a bare encoder means ``embedding``)."""
    folder = checkpoint_folder(path)
    task = _task(folder, task)
    transformers = _transformers("hf: models")
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    auto = {"causal-lm": transformers.AutoModelForCausalLM,
            "sequence-classification": transformers.AutoModelForSequenceClassification,
            "embedding": transformers.AutoModel}[task]
    network = _load(auto, folder, task)
    transposed = conv1d_to_linear_(network)
    wrapper = SentenceEmbedder(network) if task == "embedding" else Logits(network)
    prefix = "encoder." if task == "embedding" else "model."
    wrapper.hf_source = HFSource(folder, task, tuple(prefix + name for name in transposed))
    return wrapper.eval()


def hf_source(model: nn.Module) -> HFSource | None:
    """The ``HFSource`` of a model built by ``build_hf_model`` (None for any other model)."""
    return getattr(model, "hf_source", None)


def checkpoint_folder(path: str | Path) -> Path:
    """``path`` if it is a folder holding a transformers ``config.json`` and safetensors weights;
    otherwise one-line ``InputError`` naming what is missing."""
    try:
        folder = Path(path).expanduser()
        found = folder.is_dir()
    except (RuntimeError, ValueError):  # ~name of no known user; a NUL byte in the path
        folder, found = Path(path), False
    if not found:
        raise InputError(f"hf model folder not found: {folder}; give a local folder written by save_pretrained")
    config = _read_config(folder)
    if "model_type" not in config:
        raise InputError(f"{folder}/config.json has no model_type; it is not a transformers checkpoint")
    if "auto_map" in config:
        raise InputError(f"{folder} needs custom model code (auto_map in config.json), which is never run; "
                         "give a checkpoint of an architecture transformers ships")
    if not any(folder.glob("*.safetensors")):
        other = "" if not any(folder.glob("*.bin")) else " (*.bin pickles are not read)"
        raise InputError(f"{folder} has no *.safetensors weights{other}; re-save it with save_pretrained")
    return folder


def max_sequence_length(folder: str | Path) -> int | None:
    """The longest input the model's position table allows (``max_position_embeddings`` or
    ``n_positions`` in config.json), None when the config names no limit."""
    config = _read_config(Path(folder))
    for key in _CONFIG_MAX_LENGTH_KEYS:
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def num_labels(folder: str | Path) -> int | None:
    """The number of classes of a classifier checkpoint (``id2label`` in config.json), None if
    the config names none."""
    config = _read_config(Path(folder))
    id2label = config.get("id2label")
    return len(id2label) if isinstance(id2label, dict) and id2label else None


def load_tokenizer(folder: str | Path):
    """The tokenizer saved in ``folder`` (never downloaded); one-line ``InputError`` if none is."""
    folder = Path(folder)
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")
    if not any((folder / name).exists() for name in names):
        raise InputError(f"{folder} has no tokenizer ({', '.join(names)}); text data needs the model's tokenizer")
    transformers = _transformers(f"the tokenizer of {folder}")
    try:
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the tokenizer in {folder}: {_first_line(exc)}") from exc


def conv1d_to_linear_(model: nn.Module) -> tuple[str, ...]:
    """In place: every ``transformers.pytorch_utils.Conv1D`` (``y = x W + b``, ``W: [in, out]``)
    becomes an ``nn.Linear`` of the same name with weight ``Wᵀ`` (a new Parameter) and the same
    bias Parameter; returns the replaced module names."""
    from transformers.pytorch_utils import Conv1D

    names = tuple(name for name, module in model.named_modules() if isinstance(module, Conv1D))
    for name in names:
        conv = model.get_submodule(name)
        linear = nn.Linear(conv.nx, conv.nf, device=conv.weight.device, dtype=conv.weight.dtype)
        linear.weight = nn.Parameter(conv.weight.detach().t().contiguous(), conv.weight.requires_grad)
        linear.bias = conv.bias
        model.set_submodule(name, linear.train(conv.training))
    return names


class Logits(nn.Module):
    """A transformers model with a head, called as ``(input_ids, attention_mask)``; returns its
    logits (causal LM ``[batch, tokens, vocab]``, classifier ``[batch, classes]``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class SentenceEmbedder(nn.Module):
    """embedding = normalise(Σ_t mask_t · h_t / Σ_t mask_t) over the encoder's last hidden states."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def _transformers(what: str):
    """The transformers package, offline; ``MissingDependencyError`` when it is not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(what, "text", str(exc)) from exc
    return transformers


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise InputError(f"{folder} has no config.json; it is not a transformers checkpoint")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise InputError(f"{path} holds a {type(config).__name__}, not a transformers config object")
    return config


def _task(folder: Path, task: str | None) -> str:
    """``task`` if given, else the head of the config's first architecture."""
    if task is not None:
        if task not in TASKS:
            raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        return task
    architectures = _read_config(folder).get("architectures") or []
    if not architectures:
        raise InputError(f"{folder}/config.json names no architectures; give task ({', '.join(TASKS)})")
    name = str(architectures[0])
    for suffix, kind in _ARCHITECTURE_SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    if name.endswith("Model"):
        return "embedding"
    raise InputError(f"{folder}: architecture {name} has no head this tool knows; give task ({', '.join(TASKS)})")


def _load(auto: type, folder: Path, task: str) -> nn.Module:
    """``auto.from_pretrained`` offline in float32 with eager attention and no key/value cache;
    refuses a checkpoint that lacks weights of the requested model (they would be random)."""
    try:
        model, info = auto.from_pretrained(
            folder, local_files_only=True, use_safetensors=True, dtype=torch.float32,
            attn_implementation="eager", use_cache=False, output_loading_info=True,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot load {folder} as a {task} model: {_first_line(exc)}") from exc
    missing = sorted(str(key) for key in [*info["missing_keys"], *info["mismatched_keys"]])
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise InputError(f"{folder} has no trained weights for {shown} of a {task} model; "
                         "give the task the checkpoint was saved for")
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
