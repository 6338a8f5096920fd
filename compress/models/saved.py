"""Load a saved program: a ``torch.export`` archive or a TorchScript module."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from compress.errors import InputError


def saved_format(path: Path) -> str:
    """``torchscript``, ``export`` or ``pickle`` (e.g. a state_dict), from the zip archive's layout."""
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a saved torch.export program or TorchScript module")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any("/code/" in name for name in names):
        return "torchscript"
    if any(name.endswith("/archive_format") or "/models/" in name for name in names):
        return "export"
    return "pickle"


def load_saved_program(path: Path) -> nn.Module:
    """``torch.export.load(path).module()`` or ``torch.jit.load(path)``, by the file's layout."""
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    kind = saved_format(path)
    if kind == "pickle":
        raise InputError(
            f"{path} holds a pickled object (a state_dict?), not a program; build the model from "
            "a spec and pass this file as --weights"
        )
    try:
        if kind == "torchscript":
            return torch.jit.load(str(path), map_location="cpu").eval()
        return torch.export.load(str(path)).module()
    except Exception as exc:
        raise InputError(f"cannot load {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
