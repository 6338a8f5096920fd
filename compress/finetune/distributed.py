"""Fine-tuning under torchrun: join a gloo process group (CPU), wrap the student in
DistributedDataParallel, and leave the group cleanly (every rank waits at a barrier first: a rank
that exits early aborts gloo)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from compress.curvature.distributed import rank_and_world


@contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """(rank, world size). Joins the group when launched by torchrun and none is open, and then
    also leaves it; a group the caller opened is left to the caller."""
    import torch.distributed as dist

    opened = int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized()
    if opened:
        dist.init_process_group("gloo")
    try:
        yield rank_and_world()
    finally:
        if opened:
            dist.barrier()
            dist.destroy_process_group()


def wrap(student: nn.Module, world: int) -> nn.Module:
    """DistributedDataParallel around ``student`` (which averages gradients over ranks) when
    there is more than one rank; the student itself otherwise."""
    if world == 1:
        return student
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(student)


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
