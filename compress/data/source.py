"""Data sources: a fixed sequence of (inputs, targets) examples read in batches.

A batch's ``inputs`` is a tuple of tensors passed positionally to the model (one tensor for
images, ``(input_ids, attention_mask)`` for text); ``targets`` is a tensor of class indices, or
None when the data has no labels (then fidelity is measured against a reference model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:
    import torch

HELDOUT_FRACTION = 0.2
SPLIT_SEED = 0
SPLITS = ("train", "heldout", "all")


@dataclass(frozen=True)
class Batch:
    """One batch: positional model inputs and optional integer class targets."""

    inputs: tuple["torch.Tensor", ...]
    targets: "torch.Tensor | None"

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0])


class DataSource(ABC):
    """A named, finite, ordered set of examples that can be read in batches."""

    name: str
    has_targets: bool

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Yield consecutive batches of at most ``batch_size`` examples, in a fixed order."""

    @abstractmethod
    def subset(self, indices: Sequence[int], name: str) -> "DataSource":
        """The examples at ``indices``, in that order."""

    def split(self, which: str) -> "DataSource":
        """``train``/``heldout``: the first 80% / last 20% of a fixed permutation (seed 0)."""
        if which == "all":
            return self
        import torch

        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(SPLIT_SEED))
        num_heldout = round(len(self) * HELDOUT_FRACTION)
        chosen = order[len(self) - num_heldout :] if which == "heldout" else order[: len(self) - num_heldout]
        return self.subset(chosen.tolist(), f"{self.name}[{which}]")


class TensorData(DataSource):
    """Examples held as tensors in memory; batches are views, nothing is copied."""

    def __init__(self, name: str, inputs: tuple["torch.Tensor", ...], targets: "torch.Tensor | None"):
        self.name = name
        self.inputs = inputs
        self.targets = targets
        self.has_targets = targets is not None

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0])

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            targets = None if self.targets is None else self.targets[start:stop]
            yield Batch(tuple(x[start:stop] for x in self.inputs), targets)

    def subset(self, indices: Sequence[int], name: str) -> "TensorData":
        import torch

        index = torch.as_tensor(list(indices), dtype=torch.long)
        targets = None if self.targets is None else self.targets[index]
        return TensorData(name, tuple(x[index] for x in self.inputs), targets)


class TokenData(TensorData):
    """Token sequences ``(input_ids, attention_mask)`` padded to a common length. Batches group
    sequences of similar length (sorted by length) and drop the padding columns no sequence in the
    batch uses, which changes no output of a masked model and saves most of the compute."""

    def batches(self, batch_size: int) -> Iterator[Batch]:
        import torch

        lengths = self.inputs[1].sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        for start in range(0, len(self), batch_size):
            index = order[start : start + batch_size]
            width = int(lengths[index].max())
            targets = None if self.targets is None else self.targets[index]
            yield Batch(tuple(x[index, :width] for x in self.inputs), targets)

    def subset(self, indices: Sequence[int], name: str) -> "TokenData":
        subset = super().subset(indices, name)
        return TokenData(name, subset.inputs, subset.targets)


class DatasetData(DataSource):
    """A ``torch.utils.data.Dataset`` read lazily, one batch at a time.

    Items are ``x``, ``(x, y)`` or ``((x1, x2, ...), y)``.
    """

    def __init__(self, name: str, dataset: "torch.utils.data.Dataset", has_targets: bool):
        self.name = name
        self.dataset = dataset
        self.has_targets = has_targets

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def batches(self, batch_size: int) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        for item in loader:
            yield _as_batch(item, self.has_targets)

    def subset(self, indices: Sequence[int], name: str) -> "DatasetData":
        from torch.utils.data import Subset

        return DatasetData(name, Subset(self.dataset, list(indices)), self.has_targets)


def dataset_data(name: str, dataset: "torch.utils.data.Dataset") -> DatasetData:
    """A Dataset as data; its first item says whether it carries targets (an empty one has none
    to read, and is refused by the verbs' input checks)."""
    if len(dataset) == 0:  # type: ignore[arg-type]
        return DatasetData(name, dataset, has_targets=False)
    first = dataset[0]
    return DatasetData(name, dataset, has_targets=isinstance(first, (tuple, list)) and len(first) == 2)


def _as_batch(item: object, has_targets: bool) -> Batch:
    """Turn a collated Dataset item into a Batch."""
    if not has_targets:
        return Batch(_as_inputs(item), None)
    inputs, targets = item  # type: ignore[misc]
    return Batch(_as_inputs(inputs), targets)


def _as_inputs(inputs: object) -> tuple["torch.Tensor", ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)  # type: ignore[arg-type]
