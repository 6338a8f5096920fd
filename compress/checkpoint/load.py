"""``load_model(spec)``: a compressed checkpoint directory or a float model (DESIGN §2 specs).

This sits above ``models/`` (the float model builder knows nothing of the checkpoint format), so
every verb that accepts "a model" accepts a checkpoint written by ``apply`` as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def load_model(spec: str, weights: str | None = None, task: str | None = None) -> "nn.Module":
    """The model ``spec`` names, in eval mode: a compressed checkpoint directory (``weights`` and
    ``task`` must then be None: the checkpoint holds its own) or a float model spec with an
    optional state_dict (``task``: the head of an ``hf:`` model)."""
    from compress.checkpoint.format import is_checkpoint, load_checkpoint
    from compress.errors import InputError
    from compress.models.spec import build_model

    if is_checkpoint(Path(spec)):
        if weights is not None or task is not None:
            raise InputError(f"{spec} is a compressed checkpoint with its own weights and task; leave weights "
                             "and task unset")
        return load_checkpoint(Path(spec))[0]
    return build_model(spec, weights, task)


def reference_model(spec: str) -> "nn.Module | None":
    """What a model's outputs are compared with on data without labels: a checkpoint's
    uncompressed model (rebuilt from its info); None for any other spec (name one)."""
    from compress.checkpoint.format import is_checkpoint, read_info
    from compress.models.spec import build_model

    if is_checkpoint(Path(spec)):
        info = read_info(Path(spec))
        return build_model(info.model_spec, info.model_weights, info.recipe.get("model", {}).get("task"))
    return None
