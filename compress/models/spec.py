"""Parse a float model spec (DESIGN §2) and build the model it names, in eval mode.

Compressed checkpoint directories are an L3 format: ``compress.checkpoint.load_model`` reads
them and falls back to ``build_model`` for every other spec."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from compress.errors import InputError, MissingDependencyError
from compress.pyfile import call_factory, split_file_spec

if TYPE_CHECKING:
    from torch import nn

MODEL_SPEC_FORMS = ("builtin:NAME, torchvision:NAME, hf:FOLDER (a local transformers checkpoint), FILE.py:FACTORY, "
                    "a saved FILE.pt/.pt2 or a compressed checkpoint directory")  # the last one is read by compress.checkpoint
SAVED_SUFFIXES = (".pt", ".pt2", ".pth", ".ts")


def _builtin_models() -> dict[str, Callable[[], "nn.Module"]]:
    def mnist_cnn() -> "nn.Module":
        from compress.models.mnist_cnn import build_mnist_cnn

        return build_mnist_cnn()

    def minilm() -> "nn.Module":
        from compress.models.minilm import build_minilm

        return build_minilm()

    return {"mnist-cnn": mnist_cnn, "minilm": minilm}


def build_model(spec: str, weights: str | None = None, task: str | None = None) -> "nn.Module":
    """The module named by ``spec`` with ``weights`` (a state_dict file) loaded, in eval mode;
    ``task`` picks the head of an ``hf:`` model (default: the one its config names)."""
    if task is not None and not spec.startswith("hf:"):
        raise InputError(f"task applies to hf:FOLDER models, not to {spec}")
    model = _build(spec, task)
    if weights is not None:
        from compress.models.weights import load_weights_

        load_weights_(model, Path(weights))
    return _in_eval_mode(model)


def _in_eval_mode(model: "nn.Module") -> "nn.Module":
    """``model.eval()``; a ``torch.export`` module refuses it and keeps the mode it was traced in."""
    try:
        return model.eval()
    except NotImplementedError:
        return model


def _build(spec: str, task: str | None = None) -> "nn.Module":
    kind, sep, name = spec.partition(":")
    if sep and kind == "builtin":
        builtins = _builtin_models()
        if name not in builtins:
            raise InputError(f"unknown builtin model {name!r}; available: {', '.join(sorted(builtins))}")
        return builtins[name]()
    if sep and kind == "torchvision":
        return _torchvision(name)
    if sep and kind == "hf":
        from compress.models.hf import build_hf_model

        return build_hf_model(name, task)
    file_spec = split_file_spec(spec)
    if file_spec is not None:
        return _checked_module(spec, call_factory(*file_spec))
    if spec.endswith(SAVED_SUFFIXES):
        from compress.models.saved import load_saved_program

        return load_saved_program(Path(spec))
    raise InputError(f"unrecognised model spec {spec!r}; give {MODEL_SPEC_FORMS}")


def _torchvision(name: str) -> "nn.Module":
    try:
        import torchvision
    except Exception as exc:
        raise MissingDependencyError(f"torchvision:{name}", "vision", str(exc)) from exc
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise InputError(f"unknown torchvision model {name!r}; e.g. {', '.join(available[:6])}, ...")
    return torchvision.models.get_model(name, weights=None)


def _checked_module(spec: str, result: object) -> "nn.Module":
    from torch import nn

    if not isinstance(result, nn.Module):
        raise InputError(f"{spec} returned {type(result).__name__}, not a torch.nn.Module")
    return result
