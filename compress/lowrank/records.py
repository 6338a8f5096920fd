"""What ``apply_lowrank_`` did per layer (output), serialised with ``to_dict`` / ``from_dict``.

The records are enough to rebuild a factorised model's structure before loading its weights
(``apply.restore_structure_``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from compress.errors import InputError
from compress.lowrank.settings import LowRankSettings

RECORDS_VERSION = 1


@dataclass(frozen=True)
class LowRankRecord:
    """One factorised layer.

    ``kind``: Linear or Conv2d; ``m``, ``n``, ``groups``: its weight as per-group m×n matrices;
    ``rank``: per group. ``params_before`` / ``params_after``: exact counts, bias included.
    ``predicted_error``: the sum of the discarded squared singular values in the method's metric
    (``metric``: ``weight`` = ‖ΔW‖²_F, ``output`` = (1/N)·Σ_t‖ΔW·x_t‖² plus the damping term,
    ``fisher_weight`` = Σ_i d_i‖ΔW_i‖², ``fisher_output`` = (1/N)·Σ_t Σ_i d_i·(ΔW·x_t)_i², with d
    and H damped; see ``factorize.py``). ``output_error``: (1/N)·Σ_t‖ΔW·x_t‖² measured exactly on the
    calibration statistics (undamped H), for every method, or None when no statistics were given;
    with ``settings.input_drift``, (1/N)·Σ_t‖W·x_t − Ŵ·x̃_t‖² against the float model's output on
    the float model's input x_t (x̃_t: the input from the factorised earlier layers), and the
    predicted error adds the floor no rank removes (``drift.py``).
    """

    kind: str
    settings: LowRankSettings
    m: int
    n: int
    groups: int
    rank: int
    params_before: int
    params_after: int
    predicted_error: float
    metric: str
    output_error: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LowRankRecord":
        return cls(**{**data, "settings": LowRankSettings(**data["settings"])})


@dataclass(frozen=True)
class LowRankRecords:
    """Per layer name (the name of the layer that was replaced), its record."""

    layers: dict[str, LowRankRecord]
    version: int = field(default=RECORDS_VERSION)

    def to_dict(self) -> dict:
        return {"version": self.version, "layers": {name: r.to_dict() for name, r in self.layers.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "LowRankRecords":
        if data.get("version") != RECORDS_VERSION:
            raise InputError(f"low-rank records version {data.get('version')!r} is not supported "
                             f"(expected {RECORDS_VERSION})")
        return cls({name: LowRankRecord.from_dict(r) for name, r in data["layers"].items()}, data["version"])
