"""Load a ``state_dict`` file (``--weights``) into a model, safely (``weights_only=True``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from compress.errors import InputError


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors saved at ``path``; refuses pickled code and anything that is not a state_dict."""
    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read weights {path} as a state_dict (weights_only=True): {first_line}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} is not a state_dict (a dict of tensors); save one with torch.save(model.state_dict())")
    return state


def load_weights_(model: nn.Module, path: Path) -> nn.Module:
    """Load ``path`` into ``model`` strictly: every key present and every shape equal."""
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if mismatched:
        key = sorted(mismatched)[0]
        problems.append(
            f"{len(mismatched)} of another shape (e.g. {key}: file {tuple(state[key].shape)}, "
            f"model {tuple(expected[key].shape)})"
        )
    if problems:
        raise InputError(f"weights {path} do not fit the model: keys {'; '.join(problems)}; "
                        "pass weights saved from this architecture")
    model.load_state_dict(state)
    return model
