"""Packed safetensors state dicts: every fast example recipe applied, packed, read back and
loaded into a model rebuilt from its records computes bit for bit what the applied model
computes; the tensor file is within 10% of the size ``evaluate`` reports; damaged files and
layouts that do not match their tensors are refused with one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from compress.checkpoint.resize import resize_to_state_dict_
from compress.data.spec import load_data
from compress.errors import InputError
from compress.evaluation import model_size
from compress.lowrank.apply import restore_structure_
from compress.models.spec import build_model
from compress.pack.state import layout_path, read_packed_state, write_packed_state
from compress.quant.modules import QuantLayer
from compress.quant.quantize import rebuild_quantized_
from tests.helpers.applied_recipes import RECIPES, apply_recipe

SIZE_TOLERANCE = 0.10


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return load_data("builtin:mnist5k", "heldout", "heldout").inputs[0][:256]


def _rebuilt(applied, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """What loading a checkpoint does: build from the spec, factorise, resize, replay the records, load strictly."""
    model = build_model(applied.spec)
    if applied.lowrank is not None:
        restore_structure_(model, applied.lowrank)
    model = resize_to_state_dict_(model, state)
    rebuild_quantized_(model, applied.quant)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_reload_is_bit_exact(recipe: Path, tmp_path: Path, images: torch.Tensor) -> None:
    applied = apply_recipe(recipe)
    write_packed_state(tmp_path / "weights.safetensors", applied.model)
    state = read_packed_state(tmp_path / "weights.safetensors")
    original = applied.model.state_dict()
    assert list(state) == list(original)
    rebuilt = _rebuilt(applied, state)
    quantized = {f"{n}.weight" for n, m in applied.model.named_modules()
                 if isinstance(m, QuantLayer) and m.settings.weight_bits is not None}
    assert quantized, "the recipe quantizes no weight"
    for name, tensor in original.items():
        if name not in quantized:
            assert torch.equal(state[name], tensor), name
    for name, layer in applied.model.named_modules():
        if isinstance(layer, QuantLayer):
            twin = rebuilt.get_submodule(name)
            with torch.no_grad():
                assert torch.equal(twin.weight_scales(), layer.weight_scales()), name
                assert torch.equal(twin.quantized_weight(), layer.quantized_weight()), name
                bias = layer.quantized_bias()
                assert bias is None or torch.equal(twin.quantized_bias(), bias), name
    with torch.no_grad():
        assert torch.equal(rebuilt(images), applied.model(images))


def deployed_size(model: torch.nn.Module) -> float:
    """Bytes ``evaluate`` reports for ``model`` with every quantized weight replaced by its
    quantized value: zeros are then counted where the codes are 0 (rounded or pruned), as stored."""
    deployed = copy.deepcopy(model)
    with torch.no_grad():
        for layer in deployed.modules():
            if isinstance(layer, QuantLayer) and layer.settings.weight_bits is not None:
                layer.weight.copy_(layer.quantized_weight())
    return model_size(deployed)[1] * 1e6


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_tensor_file_has_the_reported_size(recipe: Path, tmp_path: Path) -> None:
    applied = apply_recipe(recipe)
    size = write_packed_state(tmp_path / "weights.safetensors", applied.model)
    reported = deployed_size(applied.model)
    ratio = size.tensor_bytes / reported
    assert abs(ratio - 1) <= SIZE_TOLERANCE, f"{size.tensor_bytes} bytes on disk vs {reported:.0f} reported ({ratio:.3f}x)"
    # evaluate() on the applied model counts zeros of the float weights, not of the codes: never less
    assert size.tensor_bytes <= (1 + SIZE_TOLERANCE) * model_size(applied.model)[1] * 1e6
    assert size.tensor_bytes == (tmp_path / "weights.safetensors").stat().st_size
    assert size.metadata_bytes == layout_path(tmp_path / "weights.safetensors").stat().st_size > 0
    float_bytes = sum(t.numel() * t.element_size() for t in applied.model.state_dict().values())
    assert size.tensor_bytes < 0.5 * float_bytes  # codes, not float weights


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("packed") / "weights.safetensors"
    write_packed_state(path, apply_recipe(RECIPES[-1]).model)
    return path


def _copy(packed: Path, tmp_path: Path) -> Path:
    target = tmp_path / packed.name
    target.write_bytes(packed.read_bytes())
    layout_path(target).write_bytes(layout_path(packed).read_bytes())
    return target


def _refused(path: Path, match: str) -> None:
    with pytest.raises(InputError, match=match) as raised:
        read_packed_state(path)
    assert "\n" not in str(raised.value)


def test_truncated_file_is_refused(packed: Path, tmp_path: Path) -> None:
    path = _copy(packed, tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    _refused(path, "truncated or edited")


def test_edited_file_is_refused(packed: Path, tmp_path: Path) -> None:
    path = _copy(packed, tmp_path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    _refused(path, "truncated or edited")


def test_layout_that_does_not_match_its_tensors_is_refused(packed: Path, tmp_path: Path) -> None:
    path = _copy(packed, tmp_path)
    layout = json.loads(layout_path(path).read_text())
    weight = next(e for e in layout["entries"] if e["codes"] is not None and not e["codes"]["masked"])
    weight["shape"][0] += 1
    layout_path(path).write_text(json.dumps(layout))
    _refused(path, "does not match its tensors")


def test_layout_with_a_wrong_bit_width_is_refused(packed: Path, tmp_path: Path) -> None:
    path = _copy(packed, tmp_path)
    layout = json.loads(layout_path(path).read_text())
    weight = next(e for e in layout["entries"] if e["codes"] is not None and e["codes"]["bits"] == 8)
    weight["codes"]["bits"] = 9
    layout_path(path).write_text(json.dumps(layout))
    _refused(path, "not a valid packed-state layout")


def test_missing_or_foreign_layout_is_refused(packed: Path, tmp_path: Path) -> None:
    path = _copy(packed, tmp_path)
    layout_path(path).write_text(json.dumps({"format": "something-else", "version": 1}))
    _refused(path, "not a packed-state layout")
    layout_path(path).unlink()
    _refused(path, "needs its layout file")
