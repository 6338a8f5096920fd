"""Absorbed pricing: what compressing one layer costs after apply's input-drift correction has let
the layers after it absorb what they can.

``apply`` reconstructs layers true-sequentially with the input-drift correction (``compress/
reconstruct/drift.py``, GPTAQ / Qronos): each later layer c is fitted to the float model's output on
the float input, min ‖W_c·x − Ŵ_c·x̃‖², x̃ its input from the already compressed earlier layers,
through the target W*_c = W_c·C·H̃⁻¹ (ridge chosen by GCV). Part of an earlier layer's error is undone
downstream — all of it where the compressed input still determines the float one linearly (a linear
layer followed by another: W₂W₁x = W₂W₁Ŵ₁⁻¹·(Ŵ₁x) for an invertible Ŵ₁), none of it after the last
layer. Pricing a layer alone on the float model and adding the prices counts the absorbed part in
every plan, most in plans with many low-bit layers (builtin:mnist-cnn: 2–6× over, Spearman 0.83).

The absorbed price of (l, o) compresses l by o (its reconstructed weight, as apply writes it) and
re-fits every layer after l, in apply's order, by apply's own drift rule to its float target W*_c,
left in float (each layer's own compression is priced by its own entry):

- measured: ΔL_abs(l, o), the loss change of that model on the calibration data;
- trace-mapped: the re-fitted *last* layers' (those of the forward pass's last step, which the loss
  reads) residual output errors D_c(W*_c) (``drift.drift_objective``), mapped to loss units with their
  own traces exactly as Ω_rec maps a layer's own error, Ω_abs = Σ_c (Tr_c/n_c)·D_c/h̄_c
  (``reconstructed.omega_from_error``). A layer of the last step has nothing after it: Ω_rec.

Both equal the isolated prices when nothing downstream can absorb (the last layer), and are what a
plan's prices add up to when the layers' errors interact only through the drift correction. Measured
on builtin:mnist-cnn: 12 random 3-bit allocations measured ΔL 0.0006–0.0029, the sum of absorbed
ΔL 0.0009–0.0027 (isolated: 0.0018–0.0125).

Cost: one sequential re-fit of the downstream layers per (layer, option) — its statistics passes and
one eigen-decomposition per downstream layer — i.e. about half an ``apply`` per option, which is why
``pricing: auto`` turns it on only where that stays within the whole-plan verification's cost
(``auto_pricing``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from compress.curvature.result import Curvature
from compress.plan.reconstructed import Reconstructions, deployed_settings, omega_from_error
from compress.plan.sensitivity import safe_trace
from compress.reconstruct.drift import drift_error, float_target
from compress.reconstruct.sequential import Forward, execution_steps, step_stats
from compress.reconstruct.stats import LayerStats, run_forward
from compress.vocab.layers import compressible_layers
from compress.vocab.options import LayerOption

PRICINGS = ("isolated", "absorbed", "auto")
AUTO_MAX_INPUTS = 2048  # widest layer (inputs per output) up to which a downstream re-fit is cheap
AUTO_REFITS_PER_LAYER = 8  # downstream re-fits per layer allowed: those of verifying 8 whole plans


def drift_refit(weight: torch.Tensor, stats: LayerStats) -> tuple[torch.Tensor, float]:
    """(W*, D(W*)): apply's drift target of a float ``weight`` against drift statistics ``stats``
    (``drift.float_target``) in the weight's shape and dtype, and the output error the re-fit
    leaves (``drift.drift_error``, ≥ 0)."""
    rows = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
    target = float_target(rows, stats).rows
    return target.reshape(weight.shape).to(weight.dtype), max(drift_error(rows, target, stats), 0.0)


def refit_downstream_(model: nn.Module, reference: nn.Module, names: Sequence[str], batches: Sequence[object],
                      forward: Forward = run_forward) -> dict[str, float]:
    """In place: each layer of ``names`` of ``model``, in the order the forward pass reaches them,
    replaced by its float drift target W* against the ``reference`` (float) model's inputs, as
    apply's true-sequential drift correction fits it; returns each layer's residual D(W*)."""
    residuals = {}
    for step in execution_steps(model, list(names), batches[0], forward):
        collected = step_stats(model, step, batches, forward, reference, set(step))
        for name in step:
            module = model.get_submodule(name)
            weight, residuals[name] = drift_refit(module.weight, collected[name])
            with torch.no_grad():
                module.weight.copy_(weight)
    return residuals


@dataclass(frozen=True)
class Refitted:
    """What the downstream re-fit of one (layer, option) left: the residual output errors D_c(W*_c)
    of the last step's layers (empty for a layer of the last step) and the measured ΔL_abs (None:
    not measured)."""

    residuals: dict[str, float]
    delta_loss: float | None


def absorbable(option: LayerOption) -> bool:
    """Options priced absorbed: those apply reconstructs in place (weights quantized / masked by
    GPTQ / SparseGPT) without activation quantization; the others keep their isolated prices."""
    return option.rank is None and option.act_bits is None and deployed_settings(option) is not None


@dataclass
class AbsorbedPrices:
    """Absorbed prices of (layer, option) pairs of ``reconstruction.model`` (module docstring),
    computed on demand; the re-fits are cached in ``reconstruction.refitted``, so every plan made from
    one evidence shares them. ``loss_change(model)``: the calibration loss change of a modified copy
    (None: Ω only)."""

    reconstruction: Reconstructions
    curvature: Curvature
    loss_change: Callable[[nn.Module], float] | None = None

    def __post_init__(self) -> None:
        model = self.reconstruction.model
        self.steps = execution_steps(model, list(compressible_layers(model)), self.reconstruction.batches[0].inputs)

    def refitted(self, name: str, option: LayerOption) -> Refitted:
        """The downstream re-fit of ``name`` compressed by ``option`` (``absorbable``), cached."""
        cache, key = self.reconstruction.refitted, (name, option)
        if key not in cache or (cache[key].delta_loss is None and self.loss_change is not None):
            cache[key] = self._refit(name, option)
        return cache[key]

    def omega(self, name: str, option: LayerOption) -> float:
        """Ω_abs: the last layers' residuals in loss units, or Ω_rec for a layer of the last step."""
        residuals = self.refitted(name, option).residuals
        if not residuals:
            return self.reconstruction.omega(name, option, *self._trace(name))
        return sum(omega_from_error(error, *self._trace(layer), self.reconstruction.layer_stats(layer))
                   for layer, error in residuals.items())

    def delta_loss(self, name: str, option: LayerOption) -> float:
        """ΔL_abs, measured (needs ``loss_change``)."""
        return self.refitted(name, option).delta_loss

    def _refit(self, name: str, option: LayerOption) -> Refitted:
        base, inputs = self.reconstruction.model, [b.inputs for b in self.reconstruction.batches]
        model = copy.deepcopy(base)
        with torch.no_grad():
            model.get_submodule(name).weight.copy_(self.reconstruction.weight(name, option))
        at = next(i for i, step in enumerate(self.steps) if name in step)
        residuals = refit_downstream_(model, base, [n for step in self.steps[at + 1:] for n in step], inputs)
        loss = None if self.loss_change is None else self.loss_change(model.eval())
        return Refitted({layer: residuals[layer] for layer in self.steps[-1] if layer in residuals}, loss)

    def _trace(self, name: str) -> tuple[float, int]:
        info = self.curvature.layers[name]
        return safe_trace(info.trace, info.trace_stderr), info.num_params


def auto_pricing(options: dict[str, list[LayerOption]], widest: int) -> str:
    """``absorbed`` where its downstream re-fits (one per absorbable option and layer after it in
    apply's order) are at most ``AUTO_REFITS_PER_LAYER`` per layer — what verifying 8 whole plans
    costs — and every layer has at most ``AUTO_MAX_INPUTS`` inputs per output (the d³ bound of the
    whole-plan verification's default); else ``isolated``."""
    names = list(options)
    refits = sum(sum(map(absorbable, options[name])) * (len(names) - 1 - i) for i, name in enumerate(names))
    cheap = refits <= AUTO_REFITS_PER_LAYER * len(names) and widest <= AUTO_MAX_INPUTS
    return "absorbed" if cheap else "isolated"
