"""Reconstruct a model's layers one after another (true-sequential, the peers' default).

Layers are taken in the order the forward pass reaches them; layers that read the same input tensor
(q/k/v of an attention block) form one step sharing one pass. For each step, the statistics of its
layers' inputs are collected over all calibration batches from the model *as already reconstructed*
(each layer sees the inputs the compressed earlier layers produce), the forward stopping as soon as
the step's last layer has read its input; then each layer is reconstructed (``layer.py``) and its new
weight written in place. ``sequential=False`` collects every layer's statistics in one pass over the
original model instead. Memory: one step's statistics plus one batch's activations.

Layers whose settings ask for ``input_drift`` (true-sequential only) also get the drift statistics
(``drift.py``): a copy of the model as it was before any layer changed is run on the same batch
first, up to the same step, and its inputs to the step's layers are paired sample by sample with
the compressed model's. Cost: that copy's memory and a second partial forward per step and batch.
"""

from __future__ import annotations

import copy
import resource
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from compress.errors import ConfigError, InputError
from compress.progress import progress_bar
from compress.reconstruct.drift import DriftAccumulator
from compress.reconstruct.layer import LayerReconstruction, ReconstructSettings, reconstruct_layer
from compress.reconstruct.stats import StatsAccumulator, collect_layer_stats, run_forward, set_batch, supports

Forward = Callable[[nn.Module, object], object]


@dataclass(frozen=True)
class LayerReport:
    """Per layer: predicted (row-weighted) error, relative damping used and its raises, seconds of
    the sweep, bytes of its statistics, the relative ridge of the input-drift target (None without)."""

    predicted_error: float
    damp: float
    damp_raises: int
    seconds: float
    stats_bytes: int
    drift_ridge: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ReconstructReport:
    """What ``reconstruct_model_`` did: per-layer reports in processing order, total seconds, the
    process's peak resident memory (bytes) and the largest statistics held at once (bytes)."""

    layers: dict[str, LayerReport]
    sequential: bool
    seconds: float
    peak_rss_bytes: int
    peak_stats_bytes: int

    def to_dict(self) -> dict:
        return {"layers": {n: r.to_dict() for n, r in self.layers.items()}, "sequential": self.sequential,
                "seconds": self.seconds, "peak_rss_bytes": self.peak_rss_bytes, "peak_stats_bytes": self.peak_stats_bytes}


class _Captured(Exception):
    """Raised from a hook to stop the forward pass once a step's inputs are captured."""


def reconstruct_model_(
    model: nn.Module,
    settings: dict[str, ReconstructSettings],
    batches: Sequence[object],
    sequential: bool = True,
    row_weights: dict[str, torch.Tensor] | None = None,
    forward: Forward = run_forward,
) -> tuple[dict[str, LayerReconstruction], ReconstructReport]:
    """In place: replace the weight of every layer in ``settings`` by its reconstruction over the
    calibration ``batches`` (each passed to ``forward``). ``row_weights``: loss-aware ρ per layer."""
    _check(model, settings, batches)
    start = time.perf_counter()
    steps = execution_steps(model, list(settings), batches[0], forward)
    results, reports, peak_stats = {}, {}, 0
    stats = collect_layer_stats(model, batches, list(settings), forward) if not sequential else None
    drift = {name for name, s in settings.items() if s.input_drift} if sequential else set()
    reference = copy.deepcopy(model) if drift else None  # the float model, before any layer changes
    with progress_bar("reconstructing layers", len(settings)) as advance:
        for step in steps:
            collected = ({n: stats[n] for n in step} if stats is not None
                         else step_stats(model, step, batches, forward, reference, drift))
            peak_stats = max(peak_stats, sum(s.nbytes for s in collected.values()))
            for name in step:
                began = time.perf_counter()
                module = model.get_submodule(name)
                result = reconstruct_layer(module.weight, collected[name], settings[name], (row_weights or {}).get(name))
                with torch.no_grad():
                    module.weight.copy_(result.weight)
                results[name] = result
                reports[name] = LayerReport(result.predicted_error, result.damp, result.damp_raises,
                                            time.perf_counter() - began, collected[name].nbytes, result.drift_ridge)
                advance(1, status=f"{name}: error {result.predicted_error:.3g}")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return results, ReconstructReport(reports, sequential, time.perf_counter() - start, peak_rss, peak_stats)


def execution_steps(model: nn.Module, names: list[str], batch: object, forward: Forward = run_forward) -> list[list[str]]:
    """``names`` in the order one forward pass reaches them, consecutive layers reading the same
    input tensor grouped into one step."""
    seen: list[tuple[str, torch.Tensor]] = []  # holding the inputs keeps their identities unique

    def hook(name: str):
        def record(module: nn.Module, args: tuple) -> None:
            if name not in (n for n, _ in seen):
                seen.append((name, args[0]))

        return record

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    unused = sorted(set(names) - {n for n, _ in seen})
    if unused:
        raise InputError(f"layers {', '.join(unused)} never run in the model's forward pass: nothing to reconstruct")
    steps: list[list[str]] = []
    for i, (name, source) in enumerate(seen):
        if i and source is seen[i - 1][1]:
            steps[-1].append(name)
        else:
            steps.append([name])
    return steps


def step_stats(model: nn.Module, step: list[str], batches: Sequence[object], forward: Forward,
                reference: nn.Module | None = None, drift: set[str] = frozenset()):
    """Statistics of the step's layers from the current model, each forward stopped once the last
    of them has read its input; for the layers in ``drift``, paired with the ``reference`` model's
    inputs to the same layers on the same batch (``DriftAccumulator``)."""
    accumulators = {name: (DriftAccumulator if name in drift else StatsAccumulator)(model.get_submodule(name))
                    for name in step}
    paired = [name for name in step if name in drift]
    for batch in batches:
        set_batch(accumulators.values(), batch)
        floats: dict[str, torch.Tensor] = {}
        if paired:
            _run_to_inputs(reference, paired, batch, forward, floats.__setitem__)
        _run_to_inputs(model, step, batch, forward, lambda name, inputs: (
            accumulators[name].add_pair(inputs, floats[name]) if name in floats else accumulators[name].add(inputs)))
    return {name: acc.result() for name, acc in accumulators.items()}


def _run_to_inputs(model: nn.Module, names: list[str], batch: object, forward: Forward,
                   record: Callable[[str, torch.Tensor], object]) -> None:
    """``forward(model, batch)`` without gradients, each input the layers ``names`` read passed to
    ``record(name, input)``, stopped as soon as all of them have read one."""
    pending = set(names)

    def hook(name: str):
        def capture(module: nn.Module, args: tuple) -> None:
            record(name, args[0])
            pending.discard(name)
            if not pending:
                raise _Captured

        return capture

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            forward(model, batch)
    except _Captured:
        pass
    finally:
        for handle in handles:
            handle.remove()


def _check(model: nn.Module, settings: dict[str, ReconstructSettings], batches: Sequence[object]) -> None:
    if not batches:
        raise InputError("second-order reconstruction needs calibration data (got no batches)")
    modules = dict(model.named_modules())
    for name in settings:
        if name not in modules:
            raise ConfigError(f"reconstruction names {name!r}, which is not a module of the model")
        if not supports(modules[name]):
            raise ConfigError(f"{name} is a {type(modules[name]).__name__}; second-order reconstruction "
                              "handles Conv2d and Linear (use method rtn / magnitude for other layers)")
        reduction = modules[name].weight[0].numel()
        if settings[name].prunes and settings[name].pattern == "2:4" and reduction % 4:
            raise ConfigError(f"{name}: 2:4 needs a reduction size divisible by 4, got {reduction}")
