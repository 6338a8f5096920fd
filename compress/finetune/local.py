"""Block-local distillation: before the end-to-end run, each of the ``kd_layers`` modules of the
student is trained alone to reproduce the teacher's module on the teacher's own input to it.

For module l with teacher input a_l (and the same keyword arguments, e.g. a transformer block's
attention mask) the student minimises Σ‖s_l(a_l) − t_l(a_l)‖² / Σ‖t_l(a_l)‖² over the real tokens
(``losses.relative_squared_error``, the feature loss of ``kd_layers``) for ``local_steps`` steps,
with the spec's optimizer, learning rate, batches and cosine schedule. Every module sees exact
inputs, so it is fitted to its own target without the errors of the modules before it reaching
it (block reconstruction, as BRECQ does for quantization: Li et al. 2021, arXiv 2102.05426;
TinyBERT's layer-wise hidden-state targets: Jiao et al. 2020, arXiv 1909.10351). The end-to-end
phase then trains the student's modules together on its own inputs.

Each rank computes the full global batches (no gradient is exchanged), so all ranks take the same
steps; the phase runs only when a run starts fresh, not when it resumes from a checkpoint.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from compress.data.source import DataSource
from compress.finetune.features import feature
from compress.finetune.losses import relative_squared_error
from compress.finetune.order import epoch_order, global_batch, load_batch
from compress.finetune.spec import FinetuneSpec
from compress.progress import progress_bar
from compress.reconstruct.stats import token_mask


class _Reached(Exception):
    """Raised from a hook to stop the teacher once the module's output is captured."""


def distil_locally_(student: nn.Module, teacher: nn.Module, train: DataSource, spec: FinetuneSpec,
                    names: tuple[str, ...], make_optimizer: Callable[[list[nn.Parameter], float], torch.optim.Optimizer],
                    steps_per_epoch: int) -> list[float]:
    """In place: ``spec.local_steps`` steps for each module in ``names`` (in order); returns the
    training loss of every step, module after module. ``make_optimizer(params, lr)`` builds the
    spec's optimizer."""
    losses: list[float] = []
    with progress_bar("block-local distillation", spec.local_steps * len(names)) as advance:
        for name in names:
            module, reference = student.get_submodule(name), teacher.get_submodule(name)
            params = [p for p in module.parameters() if p.requires_grad]
            if not params:
                continue
            optimizer = make_optimizer(params, float(spec.lr))
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.local_steps)
            for step in range(spec.local_steps):
                epoch, position = divmod(step, steps_per_epoch)
                batch = load_batch(train, global_batch(epoch_order(len(train), spec.seed, epoch), position,
                                                       spec.batch_size))
                args, kwargs, target = module_io(teacher, reference, batch.inputs)
                output = module(*args, **kwargs)
                value = relative_squared_error(feature(output), feature(target), token_mask(batch.inputs))
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                schedule.step()
                losses.append(float(value.detach()))
                advance(1, f"{name}: loss {losses[-1]:.4g}")
    return losses


def module_io(model: nn.Module, module: nn.Module, inputs: tuple) -> tuple[tuple, dict, object]:
    """(positional args, keyword args, output) of ``module``'s call in ``model(*inputs)``, without
    gradients; the forward stops once the module has returned."""
    captured: dict[str, object] = {}

    def before(_: nn.Module, args: tuple, kwargs: dict) -> None:
        captured["args"], captured["kwargs"] = args, kwargs

    def after(_: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        captured["output"] = output
        raise _Reached

    handles = [module.register_forward_pre_hook(before, with_kwargs=True),
               module.register_forward_hook(after, with_kwargs=True)]
    try:
        with torch.no_grad():
            model(*inputs)
    except _Reached:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured["args"], captured["kwargs"], captured["output"]

