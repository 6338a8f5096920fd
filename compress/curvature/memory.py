"""How many probes one batched pass may carry, from a memory budget.

A batched backward pass of k probes holds k gradients of all D weights (float32: 4·D bytes each)
plus their flat copies and the k activation gradients of the layer in flight: about
``BYTES_PER_WEIGHT_PER_PROBE`` · D bytes per probe, measured on a sentence encoder (MiniLM, 64 and
256 sentences: +165 to +225 MB of peak memory per probe at D = 22.7M). The probes a pass may carry
are what fits between the process's present resident memory (model, data, kept graphs) and the
budget.
"""

from __future__ import annotations

BYTES_PER_WEIGHT_PER_PROBE = 12


def resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc/self/statm``; 0 where unavailable)."""
    import os

    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def probes_per_pass(dim: int, budget_bytes: float, most: int) -> int:
    """The most probes (1 ≤ k ≤ ``most``) whose batched pass fits in ``budget_bytes`` of resident
    memory for ``dim`` weights, given what the process holds now."""
    spare = budget_bytes - resident_bytes()
    return int(max(1, min(most, spare // (BYTES_PER_WEIGHT_PER_PROBE * dim))))
