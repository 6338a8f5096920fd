"""Per-layer pruning settings (input) and records (output: what was pruned, and what was not and why).

Settings are validated on construction: anything a user wrote wrong raises ``ConfigError``.
Records serialise with ``to_dict`` / ``from_dict`` (plain JSON/YAML types) and round-trip exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from compress.errors import ConfigError, InputError
from compress.vocab.options import PATTERNS

RECORDS_VERSION = 1
CRITERIA = ("magnitude", "obs", "wanda", "sparsegpt")
RECONSTRUCTED = ("wanda", "sparsegpt")  # chosen from calibration data by compress.reconstruct


@dataclass(frozen=True)
class PruneSettings:
    """How one Conv/Linear layer is pruned.

    ``ratio``: the pruned fraction in [0, 1) (of weights, or of the layer's output channels for
    ``channel``; 2:4 always prunes exactly half, so it needs 0.5). ``criterion``: ``magnitude``
    (|w|, or the sum of ℓ2 norms of a channel's weight slices) or ``obs`` (second-order saliency
    ½ w² H_qq, see ``saliency.py``; needs a saliency tensor for the layer). ``round_to``: for
    ``channel``, the kept width is rounded to a multiple of it (ONNX Runtime is 10–20% slower on
    odd widths, DESIGN §6).
    """

    ratio: float
    pattern: str = "unstructured"
    criterion: str = "magnitude"
    round_to: int | None = None
    loss_aware: bool = False

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ConfigError(f"pattern {self.pattern!r} is not allowed (allowed: {', '.join(PATTERNS)})")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"criterion {self.criterion!r} is not allowed (allowed: {', '.join(CRITERIA)})")
        if not 0 <= self.ratio < 1:
            raise ConfigError(f"ratio {self.ratio} is not allowed (allowed: 0 <= ratio < 1)")
        if self.pattern == "2:4" and self.ratio != 0.5:
            raise ConfigError(f"ratio {self.ratio} is not allowed for 2:4 (it always prunes half: use 0.5)")
        if self.criterion in RECONSTRUCTED and self.pattern == "channel":
            raise ConfigError(f"criterion {self.criterion} is not allowed for channel pruning (allowed: magnitude, obs)")
        if self.round_to is not None and (self.pattern != "channel" or self.round_to < 1):
            raise ConfigError(f"round_to {self.round_to} is not allowed (allowed: an integer >= 1, channel pattern only)")


@dataclass(frozen=True)
class MaskRecord:
    """A persistent weight mask: the settings and the fraction of the layer's weights it zeroes."""

    settings: PruneSettings
    sparsity: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MaskRecord":
        return cls(PruneSettings(**data["settings"]), data["sparsity"])


@dataclass(frozen=True)
class GroupRecord:
    """A group of coupled channels (see ``dependencies.py``): its members as ``module:role``, its
    width before and after, and the reason it was left alone (None when it was pruned or simply
    not asked for)."""

    members: tuple[str, ...]
    channels: int
    kept: int
    reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self) | {"members": list(self.members)}

    @classmethod
    def from_dict(cls, data: dict) -> "GroupRecord":
        return cls(tuple(data["members"]), data["channels"], data["kept"], data["reason"])


@dataclass(frozen=True)
class PruneRecords:
    """What ``prune_model_`` did: masks by layer name, channel groups by their first producer."""

    masks: dict[str, MaskRecord] = field(default_factory=dict)
    groups: dict[str, GroupRecord] = field(default_factory=dict)
    version: int = RECORDS_VERSION

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "masks": {name: record.to_dict() for name, record in self.masks.items()},
            "groups": {name: record.to_dict() for name, record in self.groups.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PruneRecords":
        if data.get("version") != RECORDS_VERSION:
            raise InputError(f"pruning records version {data.get('version')!r} is not supported (expected 1)")
        return cls(
            masks={name: MaskRecord.from_dict(record) for name, record in data["masks"].items()},
            groups={name: GroupRecord.from_dict(record) for name, record in data["groups"].items()},
            version=data["version"],
        )
