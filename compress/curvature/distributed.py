"""What the curvature engine needs from ``torch.distributed``: identity when not initialised."""

from __future__ import annotations

import torch


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if _active() else (0, 1)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place."""
    if _active():
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def agreed(flag: bool) -> bool:
    """Rank 0's value of ``flag`` on every rank, so decisions taken from clocks stay in step."""
    if not _active():
        return flag
    import torch.distributed as dist

    value = torch.tensor([int(flag)])
    dist.broadcast(value, src=0)
    return bool(value.item())
