"""The weight grids a checkpoint's ``compressed.json`` leaves to its weights file (format version 3).

A quantized layer's record (``compress.quant.records.LayerRecord``) carries the grid its weight
codes are on: ``weight_scales`` (one per output channel, or per block of input features) and the
``weight_zero_points`` of asymmetric blocks. As JSON text that is about 20 bytes a number: 14 MB
for all-MiniLM-L6-v2 at 4 bits in blocks of 16, beside a 56 MB tensor file that already holds
the same numbers as float32 (``compress.pack.state.WeightGrid``: the grid each packed weight was
coded on, read back exactly). So the checkpoint's JSON leaves them out (``stored_quant``, the one
place that strips) and loading puts them back from the weights file (``restored_quant``, the one
place that restores); records in memory, plans and ``QuantRecords.to_dict`` keep them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compress.errors import InputError

if TYPE_CHECKING:
    from compress.pack.state import WeightGrid

GRID_FIELDS = ("weight_scales", "weight_zero_points")


def stored_quant(quant: dict) -> dict:
    """``quant`` (``QuantRecords.to_dict()``) as ``compressed.json`` holds it: every layer with
    quantized weights without its ``GRID_FIELDS`` (a float-weight layer has none to leave out)."""
    layers = {name: _without_grid(record) for name, record in quant["layers"].items()}
    return {**quant, "layers": layers}


def restored_quant(quant: dict, grids: dict[str, "WeightGrid"], source: str) -> dict:
    """``stored_quant(records.to_dict())`` with each quantized layer's grid put back from the
    weights file's ``grids`` (keyed by ``<layer>.weight``): equal to ``records.to_dict()`` again.
    InputError (one line) when a quantized layer has no packed weight in ``source``."""
    layers = {}
    for name, record in quant["layers"].items():
        if not _has_quantized_weight(record):
            layers[name] = record
            continue
        grid = grids.get(f"{name}.weight")
        if grid is None:
            raise InputError(f"{source}: the quantized layer {name} has no packed weight there; the checkpoint's "
                             "metadata does not match its tensors")
        zeros = None if grid.zero_points is None else [int(z) for z in grid.zero_points.flatten().tolist()]
        layers[name] = {**record, "weight_scales": grid.scales.flatten().tolist(), "weight_zero_points": zeros}
    return {**quant, "layers": layers}


def _without_grid(record: dict) -> dict:
    if not _has_quantized_weight(record):
        return record
    return {key: value for key, value in record.items() if key not in GRID_FIELDS}


def _has_quantized_weight(record: dict) -> bool:
    return record["settings"]["weight_bits"] is not None
