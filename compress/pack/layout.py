"""The JSON that says how a packed tensor file holds a state dict (``weights.layout.json``).

The tensor file holds one flat tensor per storage kind: ``codes`` (uint8, every packed weight
one after another) and one per plain dtype (``float32``, ``int32``, …: every other tensor,
flattened, one after another). Entries are listed in state-dict order; each takes the next
``size`` elements of its blob, so offsets are implied and the sizes must add up exactly to the
blobs' lengths (anything else means the metadata does not belong to the tensors).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from compress.errors import InputError
from compress.pack.codes import encoded_size

FORMAT = "compress-packed-state"
VERSION = 1
CODES_BLOB = "codes"
PLAIN_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")


@dataclass(frozen=True)
class CodesSpec:
    """A weight stored as b-bit codes: ``scales`` names the entry holding its scales (per output
    channel, or [N, K/B] per ``block`` of input features); ``masked``/``kept`` as in
    ``compress.pack.codes``; ``zero_points`` names the entry holding the zero points of
    asymmetric blocks (codes stored as u = q, unsigned), None for symmetric codes."""

    bits: int
    scales: str
    block: int | None
    masked: bool
    kept: int
    zero_points: str | None = None


@dataclass(frozen=True)
class Entry:
    """One tensor: its state-dict ``name`` (``in_state`` False for scales kept only to decode
    codes), dtype, shape, and ``codes`` when it is stored packed."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    codes: CodesSpec | None = None
    in_state: bool = True

    @property
    def blob(self) -> str:
        return CODES_BLOB if self.codes is not None else self.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def size(self) -> int:
        """Elements taken from the blob (bytes for codes)."""
        if self.codes is None:
            return self.numel
        return encoded_size(self.numel, self.codes.bits, self.codes.masked, self.codes.kept)

    def to_dict(self) -> dict:
        return asdict(self) | {"shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict) -> "Entry":
        codes = data.get("codes")
        entry = cls(str(data["name"]), str(data["dtype"]), tuple(int(n) for n in data["shape"]),
                    None if codes is None else CodesSpec(**codes), bool(data.get("in_state", True)))
        if entry.dtype not in PLAIN_DTYPES:
            raise ValueError(f"entry {entry.name} has dtype {entry.dtype!r}")
        if entry.codes is not None and not 2 <= entry.codes.bits <= 8:
            raise ValueError(f"entry {entry.name} has {entry.codes.bits}-bit codes")
        return entry


@dataclass(frozen=True)
class Layout:
    entries: tuple[Entry, ...]
    tensors_sha256: str
    format: str = FORMAT
    version: int = VERSION

    def blob_sizes(self) -> dict[str, int]:
        """Elements each blob must hold: the sum of its entries' sizes."""
        sizes: dict[str, int] = {}
        for entry in self.entries:
            sizes[entry.blob] = sizes.get(entry.blob, 0) + entry.size
        return sizes

    def to_dict(self) -> dict:
        return {"format": self.format, "version": self.version, "tensors_sha256": self.tensors_sha256,
                "entries": [entry.to_dict() for entry in self.entries]}

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "Layout":
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            found = (data.get("format"), data.get("version")) if isinstance(data, dict) else type(data).__name__
            raise InputError(f"{source} is not a packed-state layout of version {VERSION} (found {found})")
        try:
            entries = tuple(Entry.from_dict(entry) for entry in data["entries"])
            return cls(entries, str(data["tensors_sha256"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source} is not a valid packed-state layout: {exc}") from exc


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
