"""The checkpoint directory: packed safetensors weights (format 2 on) reload into the same outputs;
format-1 directories (a pickled ``weights.pt``) still load; a newer format is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compress.checkpoint.format import (
    FORMAT_VERSION, INFO_FILE, PICKLED_WEIGHTS_FILE, WEIGHTS_FILE, CheckpointInfo, load_checkpoint, save_checkpoint,
)  # fmt: skip
from compress.errors import InputError
from tests.helpers.applied_recipes import RECIPES, apply_recipe

RECIPE = next(path for path in RECIPES if path.stem == "mnist-cnn-int8-ptq")


def _saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    applied = apply_recipe(RECIPE)
    info = CheckpointInfo(applied.spec, None, {}, applied.quant.to_dict())
    written = save_checkpoint(applied.model, info, tmp_path / "ckpt")
    assert written.version == FORMAT_VERSION and written.files["tensor_bytes"] > 0
    return tmp_path / "ckpt", applied.model


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.linspace(0, 1, 2 * 28 * 28).reshape(2, 1, 28, 28))


def test_packed_checkpoint_reloads_to_equal_outputs(tmp_path: Path) -> None:
    path, model = _saved(tmp_path)
    assert (path / WEIGHTS_FILE).is_file() and not (path / PICKLED_WEIGHTS_FILE).exists()
    reloaded, _ = load_checkpoint(path)
    assert torch.equal(_outputs(reloaded), _outputs(model))


def test_format_one_directories_still_load(tmp_path: Path) -> None:
    path, model = _saved(tmp_path)
    reloaded, restored = load_checkpoint(path)
    torch.save(reloaded.state_dict(), path / PICKLED_WEIGHTS_FILE)
    (path / WEIGHTS_FILE).unlink()
    info = json.loads((path / INFO_FILE).read_text())
    (path / INFO_FILE).write_text(json.dumps({**info, "version": 1, "quant": restored.quant}))  # grids in the JSON
    old, _ = load_checkpoint(path)
    assert torch.equal(_outputs(old), _outputs(model))


def test_a_newer_format_is_refused_in_one_line(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    info = json.loads((path / INFO_FILE).read_text())
    (path / INFO_FILE).write_text(json.dumps({**info, "version": FORMAT_VERSION + 1}))
    with pytest.raises(InputError, match="upgrade compress") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)
